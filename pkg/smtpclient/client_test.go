package smtpclient_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailwave/mailwave/pkg/smtpclient"
)

func TestSendPlaintext(t *testing.T) {
	be := newBackend()
	addr := startServer(t, "127.0.0.1", be, nil)
	ctx := t.Context()
	c, err := dialer("out1.sender.test").Dial(ctx, addr, "mx.test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if used, _ := c.TLS(); used {
		t.Error("TLS used on a server without STARTTLS")
	}
	if _, ok := c.Extension("pipelining"); !ok {
		t.Error("PIPELINING not seen in EHLO reply")
	}
	data := message(2000)
	res, err := c.Send(ctx, "bounce@sender.test", []string{"rcpt@dest.test"}, data, smtpclient.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Code != 250 || res.EnhancedCode != "2.0.0" || res.Reply != "OK: queued" {
		t.Errorf("result reply = %d %q %q", res.Code, res.EnhancedCode, res.Reply)
	}
	if !res.Pipelined || res.TLS || res.RemoteAddr != addr || res.Duration <= 0 {
		t.Errorf("result = %+v", res)
	}
	if len(res.Rcpts) != 1 || res.Rcpts[0].Addr != "rcpt@dest.test" || res.Rcpts[0].Err != nil {
		t.Errorf("rcpts = %+v", res.Rcpts)
	}
	if err := c.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	msgs := be.messages()
	if len(msgs) != 1 {
		t.Fatalf("server got %d messages", len(msgs))
	}
	m := msgs[0]
	if m.From != "bounce@sender.test" || strings.Join(m.Rcpts, ",") != "rcpt@dest.test" || m.Hello != "out1.sender.test" || m.TLS {
		t.Errorf("server saw %+v", m)
	}
	if m.Opts.Size != int64(len(data)) {
		t.Errorf("SIZE = %d, want %d", m.Opts.Size, len(data))
	}
	if !bytes.Equal(m.Data, data) {
		t.Error("content differs")
	}
	if _, err := c.Send(ctx, "a@b", []string{"c@d"}, data, smtpclient.SendOptions{}); !errors.Is(err, smtpclient.ErrClosed) {
		t.Errorf("Send after Quit: %v, want ErrClosed", err)
	}
}

func TestSourceIPAndHelloName(t *testing.T) {
	be := newBackend()
	addr := startServer(t, "127.0.0.1", be, nil)
	for _, tc := range []struct{ ip, helo string }{
		{"127.0.0.2", "o2.sender.test"},
		{"127.0.0.3", "o3.sender.test"},
	} {
		t.Run(tc.ip, func(t *testing.T) {
			d := dialer(tc.helo)
			d.LocalAddr = netip.MustParseAddr(tc.ip)
			c, err := d.Dial(t.Context(), addr, "mx.test")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != tc.ip {
				t.Errorf("local addr %s", got)
			}
			if _, err := c.Send(t.Context(), "a@sender.test", []string{tc.ip + "@dest.test"}, message(100), smtpclient.SendOptions{}); err != nil {
				t.Fatal(err)
			}
			for _, m := range be.messages() {
				if m.Rcpts[0] == tc.ip+"@dest.test" {
					if m.Remote.String() != tc.ip || m.Hello != tc.helo {
						t.Errorf("server saw source %s hello %q", m.Remote, m.Hello)
					}
					return
				}
			}
			t.Error("message not received")
		})
	}
}

func TestStartTLS(t *testing.T) {
	cert, pool := selfSigned(t, "mx.test")
	tlsServer := func(s *smtp.Server) { s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}} }
	tests := []struct {
		name         string
		server       func(*smtp.Server)
		configure    func(*smtpclient.Dialer)
		serverName   string
		wantTLS      bool
		wantVerified bool
		wantErr      error
	}{
		{name: "opportunistic self-signed", server: tlsServer, serverName: "mx.test", wantTLS: true},
		{name: "trusted", server: tlsServer, serverName: "mx.test", wantTLS: true, wantVerified: true,
			configure: func(d *smtpclient.Dialer) { d.TLSConfig = &tls.Config{RootCAs: pool} }},
		{name: "trusted but wrong name", server: tlsServer, serverName: "other.test", wantTLS: true,
			configure: func(d *smtpclient.Dialer) { d.TLSConfig = &tls.Config{RootCAs: pool} }},
		{name: "require verified and verified", server: tlsServer, serverName: "mx.test", wantTLS: true, wantVerified: true,
			configure: func(d *smtpclient.Dialer) { d.TLSConfig = &tls.Config{RootCAs: pool}; d.RequireVerifiedTLS = true }},
		{name: "require verified but untrusted", server: tlsServer, serverName: "mx.test", wantErr: smtpclient.ErrTLSUnverified,
			configure: func(d *smtpclient.Dialer) { d.RequireVerifiedTLS = true }},
		{name: "required and offered", server: tlsServer, serverName: "mx.test", wantTLS: true,
			configure: func(d *smtpclient.Dialer) { d.RequireTLS = true }},
		{name: "absent, plaintext", serverName: "mx.test"},
		{name: "absent but required", serverName: "mx.test", wantErr: smtpclient.ErrTLSRequired,
			configure: func(d *smtpclient.Dialer) { d.RequireTLS = true }},
		{name: "disabled", server: tlsServer, serverName: "mx.test",
			configure: func(d *smtpclient.Dialer) { d.DisableTLS = true }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend()
			addr := startServer(t, "127.0.0.1", be, tc.server)
			d := dialer("out.sender.test")
			if tc.configure != nil {
				tc.configure(d)
			}
			c, err := d.Dial(t.Context(), addr, tc.serverName)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Dial error %v, want %v", err, tc.wantErr)
				}
				e := asError(t, err)
				if e.Phase != smtpclient.PhaseStartTLS || !e.Temporary() {
					t.Errorf("phase %s temporary %v", e.Phase, e.Temporary())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			used, verified := c.TLS()
			if used != tc.wantTLS || verified != tc.wantVerified {
				t.Errorf("TLS() = %v, %v; want %v, %v", used, verified, tc.wantTLS, tc.wantVerified)
			}
			if used && c.TLSVersion() < tls.VersionTLS12 {
				t.Errorf("TLS version %x", c.TLSVersion())
			}
			if _, offered := c.Extension("STARTTLS"); offered && used {
				t.Error("extensions not refreshed by the EHLO after STARTTLS")
			}
			res, err := c.Send(t.Context(), "a@sender.test", []string{"b@dest.test"}, message(500), smtpclient.SendOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.TLS != tc.wantTLS || res.TLSVerified != tc.wantVerified {
				t.Errorf("result TLS %v verified %v", res.TLS, res.TLSVerified)
			}
			m := be.messages()[0]
			if m.TLS != tc.wantTLS || m.Hello != "out.sender.test" {
				t.Errorf("server saw TLS %v hello %q", m.TLS, m.Hello)
			}
		})
	}
}

// A server that offers STARTTLS but cannot complete a handshake gets the
// message in plaintext on a second connection, unless TLS is required.
func TestStartTLSHandshakeFailureFallsBack(t *testing.T) {
	broken := func(s *smtp.Server) { s.TLSConfig = &tls.Config{} } // no certificate
	be := newBackend()
	addr := startServer(t, "127.0.0.1", be, broken)
	c, err := dialer("out.sender.test").Dial(t.Context(), addr, "mx.test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if used, _ := c.TLS(); used || c.TLSFallbackError() == nil {
		t.Errorf("TLS used %v, fallback error %v", used, c.TLSFallbackError())
	}
	if _, err := c.Send(t.Context(), "a@sender.test", []string{"b@dest.test"}, message(100), smtpclient.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := be.connections(); n != 2 {
		t.Errorf("server saw %d sessions, want 2", n)
	}

	d := dialer("out.sender.test")
	d.RequireTLS = true
	_, err = d.Dial(t.Context(), addr, "mx.test")
	if !errors.Is(err, smtpclient.ErrTLSRequired) {
		t.Fatalf("required: %v", err)
	}
}

func TestReplyErrors(t *testing.T) {
	be := newBackend()
	be.rcptErr["unknown@dest.test"] = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user\nCheck the address"}
	be.rcptErr["later@dest.test"] = &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "Mailbox busy"}
	addr := startServer(t, "127.0.0.1", be, nil)
	ctx := t.Context()
	c, err := dialer("out.sender.test").Dial(ctx, addr, "mx.test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	res, err := c.Send(ctx, "a@sender.test", []string{"unknown@dest.test"}, message(100), smtpclient.SendOptions{})
	e := asError(t, err)
	if e.Phase != smtpclient.PhaseRcpt || e.Code != 550 || e.EnhancedCode != "5.1.1" || !e.Permanent() || e.Temporary() {
		t.Errorf("error %+v", e)
	}
	if e.Message != "No such user\nCheck the address" {
		t.Errorf("message %q", e.Message)
	}
	if res == nil || res.Rcpts[0].Err == nil {
		t.Errorf("result with per-recipient refusal expected, got %+v", res)
	}

	// Partial acceptance: delivered to the others, refusals per recipient.
	res, err = c.Send(ctx, "a@sender.test", []string{"ok1@dest.test", "unknown@dest.test", "later@dest.test", "ok2@dest.test"}, message(100), smtpclient.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var refused []string
	for _, r := range res.Rcpts {
		if r.Err != nil {
			refused = append(refused, r.Addr+":"+asError(t, r.Err).EnhancedCode)
		}
	}
	if strings.Join(refused, ",") != "unknown@dest.test:5.1.1,later@dest.test:4.2.1" {
		t.Errorf("refused %v", refused)
	}
	if msgs := be.messages(); len(msgs) != 1 || strings.Join(msgs[0].Rcpts, ",") != "ok1@dest.test,ok2@dest.test" {
		t.Errorf("server got %+v", msgs)
	}
	if c.Sent() != 1 {
		t.Errorf("Sent() = %d", c.Sent())
	}

	be.mu.Lock()
	be.dataErr = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Spam"}
	be.mu.Unlock()
	_, err = c.Send(ctx, "a@sender.test", []string{"x@dest.test"}, message(100), smtpclient.SendOptions{})
	if e := asError(t, err); e.Phase != smtpclient.PhaseDot || e.Code != 554 || !e.Permanent() {
		t.Errorf("dot error %+v", e)
	}

	be.mu.Lock()
	be.dataErr = nil
	be.mailErr = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Try later"}
	be.mu.Unlock()
	res, err = c.Send(ctx, "a@sender.test", []string{"x@dest.test"}, message(100), smtpclient.SendOptions{})
	if e := asError(t, err); e.Phase != smtpclient.PhaseMail || e.Code != 451 || !e.Temporary() || res != nil {
		t.Errorf("mail error %+v, result %v", e, res)
	}

	// The session survives every refusal.
	be.mu.Lock()
	be.mailErr = nil
	be.mu.Unlock()
	if _, err := c.Send(ctx, "a@sender.test", []string{"x@dest.test"}, message(100), smtpclient.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if c.Sent() != 2 || be.connections() != 1 {
		t.Errorf("Sent() = %d over %d connections", c.Sent(), be.connections())
	}
}

func TestGreetingRefused(t *testing.T) {
	tests := []struct {
		greeting  string
		code      int
		ecode     string
		permanent bool
	}{
		{"421 4.3.2 mx.test busy, try later\r\n", 421, "4.3.2", false},
		{"554-mx.test no SMTP service here\r\n554 your IP is listed\r\n", 554, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.greeting[:3], func(t *testing.T) {
			quit := make(chan bool, 1)
			addr := scripted(t, func(c net.Conn, r *bufio.Reader) {
				c.Write([]byte(tc.greeting))
				l, _ := readCmd(r)
				quit <- l == "QUIT"
				c.Write([]byte("221 bye\r\n"))
			})
			_, err := dialer("out.sender.test").Dial(t.Context(), addr, "mx.test")
			e := asError(t, err)
			if e.Phase != smtpclient.PhaseGreeting || e.Code != tc.code || e.EnhancedCode != tc.ecode || e.Permanent() != tc.permanent {
				t.Errorf("error %+v permanent %v", e, e.Permanent())
			}
			if tc.code == 554 {
				if !<-quit {
					t.Error("no QUIT after a 554 greeting")
				}
				if e.Message != "mx.test no SMTP service here\nyour IP is listed" {
					t.Errorf("message %q", e.Message)
				}
			}
		})
	}
}

// A server that refuses EHLO gets HELO, and, offering no PIPELINING, one
// command at a time.
func TestHELOFallbackWithoutPipelining(t *testing.T) {
	got := make(chan []string, 1)
	addr := scripted(t, func(c net.Conn, r *bufio.Reader) {
		var cmds []string
		defer func() { got <- cmds }()
		c.Write([]byte("220 old.test ready\r\n"))
		for {
			l, err := readCmd(r)
			if err != nil {
				return
			}
			cmds = append(cmds, l)
			// Nothing may be waiting behind a command: no pipelining.
			if r.Buffered() > 0 {
				cmds = append(cmds, "PIPELINED")
			}
			verb := strings.ToUpper(strings.Fields(l)[0])
			switch verb {
			case "EHLO":
				c.Write([]byte("502 5.5.1 what?\r\n"))
			case "RCPT":
				if strings.Contains(l, "refuse") {
					c.Write([]byte("550 5.1.1 no such user\r\n"))
				} else {
					c.Write([]byte("250 ok\r\n"))
				}
			case "DATA":
				c.Write([]byte("354 go\r\n"))
				if readData(r) != nil {
					return
				}
				c.Write([]byte("250 queued as 123\r\n"))
			case "QUIT":
				c.Write([]byte("221 bye\r\n"))
				return
			default:
				c.Write([]byte("250 ok\r\n"))
			}
		}
	})
	c, err := dialer("out.sender.test").Dial(t.Context(), addr, "old.test")
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Send(t.Context(), "", []string{"a@old.test", "b@old.test"}, message(100), smtpclient.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Pipelined || res.Reply != "queued as 123" {
		t.Errorf("result %+v", res)
	}
	// A refused recipient leaves the transaction open: the next one
	// starts with RSET.
	if _, err := c.Send(t.Context(), "", []string{"refuse@old.test"}, message(100), smtpclient.SendOptions{}); asError(t, err).Code != 550 {
		t.Fatalf("refused: %v", err)
	}
	if _, err := c.Send(t.Context(), "", []string{"c@old.test"}, message(100), smtpclient.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := "EHLO out.sender.test|HELO out.sender.test|MAIL FROM:<>|RCPT TO:<a@old.test>|RCPT TO:<b@old.test>|DATA|" +
		"MAIL FROM:<>|RCPT TO:<refuse@old.test>|RSET|MAIL FROM:<>|RCPT TO:<c@old.test>|DATA|QUIT"
	if cmds := strings.Join(<-got, "|"); cmds != want {
		t.Errorf("commands\n got %s\nwant %s", cmds, want)
	}
}

// With PIPELINING, MAIL, RCPT and DATA arrive before the server answered
// any of them: the server reads all three before replying, which would
// deadlock (and time out) a client that waits for each reply.
func TestPipelining(t *testing.T) {
	groups := make(chan []string, 4)
	addr := scripted(t, func(c net.Conn, r *bufio.Reader) {
		c.Write([]byte("220 fast.test ready\r\n"))
		l, _ := readCmd(r)
		if !strings.HasPrefix(l, "EHLO ") {
			return
		}
		c.Write([]byte("250-fast.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"))
		for {
			var group []string
			for {
				l, err := readCmd(r)
				if err != nil {
					return
				}
				group = append(group, l)
				if l == "DATA" || l == "QUIT" {
					break
				}
			}
			groups <- group
			if group[len(group)-1] == "QUIT" {
				c.Write([]byte("221 bye\r\n"))
				return
			}
			var replies strings.Builder
			for _, cmd := range group {
				switch {
				case cmd == "DATA":
					replies.WriteString("354 go\r\n")
				case strings.Contains(cmd, "refuse"):
					replies.WriteString("550 5.1.1 no\r\n")
				default:
					replies.WriteString("250 ok\r\n")
				}
			}
			c.Write([]byte(replies.String()))
			if readData(r) != nil {
				return
			}
			c.Write([]byte("250 2.0.0 queued\r\n"))
		}
	})
	c, err := dialer("out.sender.test").Dial(t.Context(), addr, "fast.test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Send(t.Context(), "a@s.test", []string{"b@d.test", "c@d.test"}, message(100), smtpclient.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if g := strings.Join(<-groups, "|"); g != "MAIL FROM:<a@s.test>|RCPT TO:<b@d.test>|RCPT TO:<c@d.test>|DATA" {
		t.Errorf("group %s", g)
	}
	// A transaction whose only recipient is refused ends with an empty
	// content after the server's 354; the next one starts with RSET in the
	// same group.
	if _, err := c.Send(t.Context(), "a@s.test", []string{"refuse@d.test"}, message(100), smtpclient.SendOptions{}); asError(t, err).Code != 550 {
		t.Fatalf("refused recipient: %v", err)
	}
	<-groups
	if _, err := c.Send(t.Context(), "a@s.test", []string{"e@d.test"}, message(100), smtpclient.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if g := strings.Join(<-groups, "|"); g != "MAIL FROM:<a@s.test>|RCPT TO:<e@d.test>|DATA" {
		t.Errorf("group after refusal %s", g)
	}
	if c.Sent() != 2 {
		t.Errorf("Sent() = %d", c.Sent())
	}
}

func TestDotStuffingRoundTrip(t *testing.T) {
	be := newBackend()
	addr := startServer(t, "127.0.0.1", be, nil)
	c, err := dialer("out.sender.test").Dial(t.Context(), addr, "mx.test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tests := []struct{ name, data, want string }{
		{"leading dot", ".starts\r\nbody\r\n", ""},
		{"lone dot line", "a\r\n.\r\nb\r\n", ""},
		{"double dots", "a\r\n..\r\n...x\r\n.\r\n", ""},
		{"dot at end", "a\r\n.", "a\r\n.\r\n"},
		{"no final CRLF", "a\r\nb", "a\r\nb\r\n"},
		{"8bit", "Subject: caf\xc3\xa9\r\n\r\n.caf\xc3\xa9\r\n", ""},
		{"big", string(message(100_000)) + ".\r\n..\r\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rcpt := strings.ReplaceAll(tc.name, " ", "-") + "@dest.test"
			if _, err := c.Send(t.Context(), "a@sender.test", []string{rcpt}, []byte(tc.data), smtpclient.SendOptions{}); err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if want == "" {
				want = tc.data
			}
			for _, m := range be.messages() {
				if m.Rcpts[0] == rcpt {
					if string(m.Data) != want {
						t.Errorf("received %q\nwant %q", truncate(m.Data), truncate([]byte(want)))
					}
					return
				}
			}
			t.Error("not received")
		})
	}
}

func truncate(b []byte) []byte {
	if len(b) > 200 {
		return b[:200]
	}
	return b
}

func TestMailParameters(t *testing.T) {
	be := newBackend()
	addr := startServer(t, "127.0.0.1", be, func(s *smtp.Server) {
		s.MaxMessageBytes = 5000
		s.EnableSMTPUTF8 = true
	})
	ascii := startServer(t, "127.0.0.1", newBackend(), nil)
	ctx := t.Context()
	c, err := dialer("out.sender.test").Dial(ctx, addr, "mx.test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	send := func(rcpt string, data []byte, opts smtpclient.SendOptions) received {
		t.Helper()
		if _, err := c.Send(ctx, "a@sender.test", []string{rcpt}, data, opts); err != nil {
			t.Fatal(err)
		}
		msgs := be.messages()
		return msgs[len(msgs)-1]
	}
	if m := send("plain@dest.test", message(100), smtpclient.SendOptions{}); m.Opts.Body != "" || m.Opts.UTF8 {
		t.Errorf("7bit message declared %q utf8 %v", m.Opts.Body, m.Opts.UTF8)
	}
	if m := send("eight@dest.test", []byte("Subject: caf\xc3\xa9\r\n\r\nx\r\n"), smtpclient.SendOptions{}); m.Opts.Body != smtp.Body8BitMIME {
		t.Errorf("8bit message declared %q", m.Opts.Body)
	}
	if m := send("forced@dest.test", message(100), smtpclient.SendOptions{Body: smtpclient.Body8BitMIME}); m.Opts.Body != smtp.Body8BitMIME {
		t.Errorf("forced 8bit declared %q", m.Opts.Body)
	}
	if m := send("seven@dest.test", []byte("x\xc3\xa9\r\n"), smtpclient.SendOptions{Body: smtpclient.Body7Bit}); m.Opts.Body != "" {
		t.Errorf("7bit option declared %q", m.Opts.Body)
	}
	if m := send("jos\xc3\xa9@dest.test", message(100), smtpclient.SendOptions{}); !m.Opts.UTF8 {
		t.Error("UTF-8 recipient without SMTPUTF8")
	}
	if m := send("hdr@dest.test", message(100), smtpclient.SendOptions{SMTPUTF8: true}); !m.Opts.UTF8 {
		t.Error("SMTPUTF8 option not declared")
	}

	_, err = c.Send(ctx, "a@sender.test", []string{"big@dest.test"}, message(6000), smtpclient.SendOptions{})
	if e := asError(t, err); !errors.Is(err, smtpclient.ErrMessageTooLarge) || !e.Permanent() {
		t.Errorf("oversize: %v", err)
	}

	c2, err := dialer("out.sender.test").Dial(ctx, ascii, "mx.test")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_, err = c2.Send(ctx, "a@sender.test", []string{"jos\xc3\xa9@dest.test"}, message(100), smtpclient.SendOptions{})
	if e := asError(t, err); !errors.Is(err, smtpclient.ErrSMTPUTF8Unsupported) || !e.Permanent() {
		t.Errorf("utf8 to a server without SMTPUTF8: %v", err)
	}
	for _, bad := range []string{"a@b\r\nRSET", "a>@b", ""} {
		_, err = c2.Send(ctx, "a@sender.test", []string{bad}, message(100), smtpclient.SendOptions{})
		if e := asError(t, err); !errors.Is(err, smtpclient.ErrInvalidAddress) || !e.Permanent() {
			t.Errorf("recipient %q: %v", bad, err)
		}
	}
	_, err = c2.Send(ctx, "a@sender.test", nil, message(100), smtpclient.SendOptions{})
	if !errors.Is(err, smtpclient.ErrNoRecipients) {
		t.Errorf("no recipients: %v", err)
	}
	// None of the refusals above reached the server or broke the session.
	if _, err := c2.Send(ctx, "a@sender.test", []string{"ok@dest.test"}, message(100), smtpclient.SendOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestReuseConnection(t *testing.T) {
	be := newBackend()
	addr := startServer(t, "127.0.0.1", be, nil)
	ctx := t.Context()
	c, err := dialer("out.sender.test").Dial(ctx, addr, "mx.test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 20 {
		if _, err := c.Send(ctx, "a@sender.test", []string{"r@dest.test"}, message(1000+i), smtpclient.SendOptions{}); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if err := c.Noop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Sent() != 20 || be.connections() != 1 || len(be.messages()) != 20 {
		t.Errorf("Sent() %d, connections %d, messages %d", c.Sent(), be.connections(), len(be.messages()))
	}
	for i, m := range be.messages() {
		if len(m.Data) != 1000+i && len(m.Data) < 1000+i {
			t.Errorf("message %d has %d bytes", i, len(m.Data))
		}
	}
}

func TestTimeouts(t *testing.T) {
	silentAfter := func(step string) string {
		return scripted(t, func(c net.Conn, r *bufio.Reader) {
			if step == "greeting" {
				readCmd(r) // until the client gives up
				return
			}
			c.Write([]byte("220 slow.test\r\n"))
			for {
				l, err := readCmd(r)
				if err != nil {
					return
				}
				switch {
				case strings.HasPrefix(l, "EHLO"):
					c.Write([]byte("250-slow.test\r\n250 PIPELINING\r\n"))
				case l == "DATA":
					if step == "data" {
						readCmd(r)
						return
					}
					c.Write([]byte("250 ok\r\n250 ok\r\n354 go\r\n"))
					readData(r)
					readCmd(r)
					return
				}
			}
		})
	}
	tests := []struct {
		step  string
		phase smtpclient.Phase
		set   func(*smtpclient.Timeouts)
	}{
		{"greeting", smtpclient.PhaseGreeting, func(t *smtpclient.Timeouts) { t.Greeting = 200 * time.Millisecond }},
		{"data", smtpclient.PhaseMail, func(t *smtpclient.Timeouts) { t.Mail = 200 * time.Millisecond }},
		{"dot", smtpclient.PhaseDot, func(t *smtpclient.Timeouts) { t.DataTerm = 200 * time.Millisecond }},
	}
	for _, tc := range tests {
		t.Run(tc.step, func(t *testing.T) {
			addr := silentAfter(tc.step)
			d := dialer("out.sender.test")
			tc.set(&d.Timeouts)
			start := time.Now()
			c, err := d.Dial(t.Context(), addr, "slow.test")
			if err == nil {
				defer c.Close()
				_, err = c.Send(t.Context(), "a@s.test", []string{"b@d.test"}, message(100), smtpclient.SendOptions{})
			}
			e := asError(t, err)
			if e.Phase != tc.phase || !e.Timeout() || !e.Temporary() {
				t.Errorf("error %v: phase %s timeout %v", err, e.Phase, e.Timeout())
			}
			if el := time.Since(start); el > 3*time.Second {
				t.Errorf("gave up after %v", el)
			}
			if c != nil && !c.Closed() {
				t.Error("session still open after a timeout")
			}
		})
	}
}

func TestContextCancelClosesConnection(t *testing.T) {
	addr := scripted(t, func(c net.Conn, r *bufio.Reader) { readCmd(r) })
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := dialer("out.sender.test").Dial(ctx, addr, "mx.test")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want deadline exceeded", err)
	}
	if e := asError(t, err); e.Phase != smtpclient.PhaseGreeting || !e.Temporary() {
		t.Errorf("error %+v", e)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("returned after %v", el)
	}
}

func TestConnectRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = dialer("out.sender.test").Dial(t.Context(), addr, "mx.test")
	if e := asError(t, err); e.Phase != smtpclient.PhaseConnect || !e.Temporary() {
		t.Errorf("error %+v", e)
	}
	if _, err := (&smtpclient.Dialer{}).Dial(t.Context(), addr, "mx.test"); !errors.Is(err, smtpclient.ErrInvalidDialer) {
		t.Errorf("no hello name: %v", err)
	}
}

// A 421 in the middle of a session ends it: the error is temporary and
// the Client refuses further use.
func TestServiceClosingMidSession(t *testing.T) {
	addr := scripted(t, func(c net.Conn, r *bufio.Reader) {
		c.Write([]byte("220 busy.test\r\n"))
		readCmd(r)
		c.Write([]byte("250-busy.test\r\n250 PIPELINING\r\n"))
		readCmd(r) // MAIL
		c.Write([]byte("421 4.7.0 busy.test closing, too many messages\r\n"))
	})
	c, err := dialer("out.sender.test").Dial(t.Context(), addr, "busy.test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Send(t.Context(), "a@s.test", []string{"b@d.test"}, message(100), smtpclient.SendOptions{})
	e := asError(t, err)
	if e.Phase != smtpclient.PhaseMail || e.Code != 421 || e.EnhancedCode != "4.7.0" || !e.Temporary() || e.MaybeDelivered() {
		t.Errorf("error %+v", e)
	}
	if !c.Closed() {
		t.Error("session open after 421")
	}
	if _, err := c.Send(t.Context(), "a@s.test", []string{"b@d.test"}, message(100), smtpclient.SendOptions{}); !errors.Is(err, smtpclient.ErrClosed) {
		t.Errorf("second Send: %v", err)
	}
}

// A context that ends while the client waits for the reply to the final
// "." closes the connection; the error says the message may have been
// delivered.
func TestSendContextCancelled(t *testing.T) {
	addr := scripted(t, func(c net.Conn, r *bufio.Reader) {
		c.Write([]byte("220 slow.test\r\n"))
		readCmd(r)
		c.Write([]byte("250-slow.test\r\n250 PIPELINING\r\n"))
		for range 3 {
			readCmd(r)
		}
		c.Write([]byte("250 ok\r\n250 ok\r\n354 go\r\n"))
		readData(r)
		readCmd(r) // never answers; returns when the client closes
	})
	c, err := dialer("out.sender.test").Dial(t.Context(), addr, "slow.test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancelCause(t.Context())
	errShutdown := errors.New("shutting down")
	go func() {
		<-time.After(100 * time.Millisecond)
		cancel(errShutdown)
	}()
	_, err = c.Send(ctx, "a@s.test", []string{"b@d.test"}, message(100), smtpclient.SendOptions{})
	if !errors.Is(err, errShutdown) {
		t.Fatalf("error %v, want the context's cause", err)
	}
	if e := asError(t, err); e.Phase != smtpclient.PhaseDot || !e.MaybeDelivered() || !e.Temporary() {
		t.Errorf("error %+v", e)
	}
	if !c.Closed() {
		t.Error("connection open after cancellation")
	}
}

// A server that offers STARTTLS and then refuses it keeps the session in
// plaintext (RFC 3207 §4), unless TLS is required.
func TestStartTLSRefused(t *testing.T) {
	addr := scripted(t, func(c net.Conn, r *bufio.Reader) {
		c.Write([]byte("220 odd.test\r\n"))
		for {
			l, err := readCmd(r)
			if err != nil {
				return
			}
			switch {
			case strings.HasPrefix(l, "EHLO"):
				c.Write([]byte("250-odd.test\r\n250 STARTTLS\r\n"))
			case l == "STARTTLS":
				c.Write([]byte("454 4.7.0 TLS not available due to temporary reason\r\n"))
			case l == "DATA":
				c.Write([]byte("354 go\r\n"))
				readData(r)
				c.Write([]byte("250 ok\r\n"))
			case l == "QUIT":
				c.Write([]byte("221 bye\r\n"))
				return
			default:
				c.Write([]byte("250 ok\r\n"))
			}
		}
	})
	c, err := dialer("out.sender.test").Dial(t.Context(), addr, "odd.test")
	if err != nil {
		t.Fatal(err)
	}
	if used, _ := c.TLS(); used {
		t.Error("TLS used")
	}
	if _, err := c.Send(t.Context(), "a@s.test", []string{"b@d.test"}, message(100), smtpclient.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	c.Quit(t.Context())

	d := dialer("out.sender.test")
	d.RequireTLS = true
	_, err = d.Dial(t.Context(), addr, "odd.test")
	e := asError(t, err)
	if !errors.Is(err, smtpclient.ErrTLSRequired) || e.Code != 454 || e.Phase != smtpclient.PhaseStartTLS || !e.Temporary() {
		t.Errorf("required: %+v", e)
	}
}
