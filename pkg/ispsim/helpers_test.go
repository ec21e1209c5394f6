package ispsim_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"gopkg.in/yaml.v3"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailwave/mailwave/pkg/ispsim"
)

var t0 = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("ISPSIM_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// start runs a simulator of the default profile, changed by edit, on a
// fake clock.
func start(t *testing.T, edit func(*ispsim.Profile)) (*ispsim.Sim, *ispsim.FakeClock) {
	t.Helper()
	p, err := ispsim.DefaultProfile()
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(p)
	}
	clk := ispsim.NewFakeClock(t0)
	sim, err := ispsim.Start(context.Background(), p, ispsim.WithClock(clk), ispsim.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sim.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return sim, clk
}

func provider(p *ispsim.Profile, name string) *ispsim.ProviderConfig {
	for i := range p.Providers {
		if p.Providers[i].Name == name {
			return &p.Providers[i]
		}
	}
	panic("no provider " + name)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// mxAddr resolves the first MX of rcpt's domain to host:port through the
// simulator's DNS, as a sender would.
func mxAddr(t *testing.T, sim *ispsim.Sim, rcpt string) string {
	t.Helper()
	ctx := ctxT(t)
	domain := rcpt[strings.LastIndexByte(rcpt, '@')+1:]
	mxs, err := sim.Resolver().LookupMX(ctx, domain)
	if err != nil || len(mxs) == 0 {
		t.Fatalf("mx %s: %v", domain, err)
	}
	addrs, err := sim.Resolver().LookupHost(ctx, mxs[0].Host)
	if err != nil || len(addrs) == 0 {
		t.Fatalf("a %s: %v", mxs[0].Host, err)
	}
	return net.JoinHostPort(addrs[0], strconv.Itoa(sim.SMTPPort()))
}

// client opens an SMTP session from source IP src to the MX of rcpt's
// domain and says EHLO.
func client(t *testing.T, sim *ispsim.Sim, src, rcpt string) (*smtp.Client, error) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	nc, err := d.Dial("tcp", mxAddr(t, sim, rcpt))
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(15 * time.Second))
	c := smtp.NewClient(nc)
	if err := c.Hello("mta1.mailwave.test"); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func msg(from, to, id, body string) string {
	return fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: hello\r\nMessage-ID: <%s>\r\nDate: Mon, 02 Nov 2026 09:00:00 +0000\r\n\r\n%s\r\n", from, to, id, body)
}

// transact runs one MAIL/RCPT/DATA transaction on c.
func transact(c *smtp.Client, from, to string, data string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(data)); err != nil {
		return err
	}
	return w.Close()
}

// send delivers one message from src in its own session.
func send(t *testing.T, sim *ispsim.Sim, src, from, to, data string) error {
	t.Helper()
	c, err := client(t, sim, src, to)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := transact(c, from, to, data); err != nil {
		return err
	}
	return c.Quit()
}

func code(err error) int {
	if se, ok := err.(*smtp.SMTPError); ok {
		return se.Code
	}
	return 0
}

var (
	ip2 = netip.MustParseAddr("127.0.0.2")
	ip3 = netip.MustParseAddr("127.0.0.3")
)

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }

func newRequest(path string) *http.Request { return httptest.NewRequest(http.MethodGet, path, nil) }

func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func mustYAML(t *testing.T, p *ispsim.Profile) []byte {
	t.Helper()
	b, err := yaml.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
