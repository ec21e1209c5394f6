package smtpclient_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/mailwave/mailwave/pkg/smtpclient"
)

// A sender's loop: one session per (source IP, MX), reused until the
// per-connection limit, each failure classified by its phase and code.
func ExampleDialer_Dial() {
	ctx := context.Background()
	d := &smtpclient.Dialer{
		LocalAddr: netip.MustParseAddr("192.0.2.10"),
		HelloName: "o10.mail.example.com",
		Timeouts:  smtpclient.Timeouts{Greeting: time.Minute},
	}
	c, err := d.Dial(ctx, "192.0.2.25:25", "mx1.example.net")
	if err != nil {
		var e *smtpclient.Error
		if errors.As(err, &e) && e.Permanent() {
			fmt.Println("refused at", e.Phase, e.Code, e.EnhancedCode)
		}
		return
	}
	defer c.Quit(ctx)
	for c.Sent() < 100 {
		res, err := c.Send(ctx, "bounce@mail.example.com", []string{"user@example.net"}, []byte("Subject: hi\r\n\r\nhello\r\n"), smtpclient.SendOptions{})
		if err != nil {
			var e *smtpclient.Error
			errors.As(err, &e)
			fmt.Println(e.Phase, e.Code, e.EnhancedCode, e.Permanent(), e.MaybeDelivered())
			return
		}
		fmt.Println("delivered", res.Reply, res.TLS, res.TLSVerified)
	}
}
