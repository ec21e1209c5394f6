package inbound_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/inbound"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

const (
	bounceAddr = "b-good@bounces.example.test"
	fblAddr    = "fbl@fbl.example.test"
)

// policy accepts bounceAddr as a DSN and fblAddr as FBL, and sets mail
// whose subject says "vacation" apart as a reply.
type policy struct{}

func (policy) Recipient(rcpt string) (mailwavev1.InboundKind, error) {
	switch strings.ToLower(rcpt) {
	case bounceAddr:
		return mailwavev1.InboundKind_INBOUND_KIND_DSN, nil
	case fblAddr:
		return mailwavev1.InboundKind_INBOUND_KIND_FBL, nil
	}
	if d := inbound.Domain(rcpt); d == "bounces.example.test" || d == "fbl.example.test" {
		return 0, inbound.ErrUnknownRecipient
	}
	return 0, inbound.ErrRelayDenied
}

func (policy) Classify(kind mailwavev1.InboundKind, raw []byte) mailwavev1.InboundKind {
	if strings.Contains(string(raw), "Subject: vacation") {
		return mailwavev1.InboundKind_INBOUND_KIND_REPLY
	}
	return kind
}

type env struct {
	addr string
	js   jetstream.JetStream
	srv  *inbound.Server
}

func start(t *testing.T, mod func(*inbound.Config)) *env {
	t.Helper()
	ns := testenv.NATS(t)
	_, js := testenv.JetStream(t, ns)
	cfg := inbound.Config{
		Domain: "mx.bounces.example.test",
		Policy: policy{},
		Store:  inbound.JetStream(events.NewPublisher(js)),
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := inbound.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return &env{addr: ln.Addr().String(), js: js, srv: srv}
}

// client is a raw SMTP conversation, so every reply code is visible.
type client struct {
	t  *testing.T
	tc *textproto.Conn
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	cl := &client{t: t, tc: textproto.NewConn(c)}
	return cl
}

// expect reads one reply and checks its code.
func (c *client) expect(code int) string {
	c.t.Helper()
	got, msg, err := c.tc.ReadResponse(0)
	if err != nil && got == 0 {
		c.t.Fatalf("read reply: %v", err)
	}
	if got != code {
		c.t.Fatalf("reply %d %q, want %d", got, msg, code)
	}
	return msg
}

func (c *client) cmd(code int, format string, args ...any) string {
	c.t.Helper()
	if err := c.tc.PrintfLine(format, args...); err != nil {
		c.t.Fatal(err)
	}
	return c.expect(code)
}

func (c *client) data(code int, body string) string {
	c.t.Helper()
	c.cmd(354, "DATA")
	w := c.tc.DotWriter()
	if _, err := w.Write([]byte(body)); err != nil {
		c.t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		c.t.Fatal(err)
	}
	return c.expect(code)
}

func hello(t *testing.T, addr string) *client {
	t.Helper()
	c := dial(t, addr)
	c.expect(220)
	c.cmd(250, "EHLO mta.example.org")
	return c
}

const bounceBody = "From: MAILER-DAEMON@mta.example.org\r\nTo: " + bounceAddr +
	"\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\nThe mail could not be delivered.\r\n"

func stored(t *testing.T, js jetstream.JetStream, kind mailwavev1.InboundKind) *mailwavev1.InboundMessage {
	t.Helper()
	ctx := testenv.Context(t)
	st, err := js.Stream(ctx, mailwavev1.StreamInbound)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.GetLastMsgForSubject(ctx, mailwavev1.SubjectInbound(kind))
	if err != nil {
		t.Fatalf("nothing stored on %s: %v", mailwavev1.SubjectInbound(kind), err)
	}
	var m mailwavev1.InboundMessage
	if err := proto.Unmarshal(raw.Data, &m); err != nil {
		t.Fatal(err)
	}
	return &m
}

func count(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	st, err := js.Stream(testenv.Context(t), mailwavev1.StreamInbound)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(testenv.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestStoresAcceptedMessageWithEnvelope(t *testing.T) {
	before := time.Now()
	e := start(t, nil)
	c := hello(t, e.addr)
	c.cmd(250, "MAIL FROM:<>")
	c.cmd(250, "RCPT TO:<%s>", strings.ToUpper(bounceAddr))
	c.data(250, bounceBody)
	c.cmd(221, "QUIT")

	m := stored(t, e.js, mailwavev1.InboundKind_INBOUND_KIND_DSN)
	if m.GetId() == "" || m.GetMailFrom() != "" || len(m.GetRcptTo()) != 1 || !strings.EqualFold(m.GetRcptTo()[0], bounceAddr) {
		t.Errorf("envelope: id %q from %q rcpt %v", m.GetId(), m.GetMailFrom(), m.GetRcptTo())
	}
	if m.GetRemoteIp() != "127.0.0.1" || m.GetHelo() != "mta.example.org" || m.GetTls() || m.GetSource() != "smtp" {
		t.Errorf("connection: ip %q helo %q tls %v source %q", m.GetRemoteIp(), m.GetHelo(), m.GetTls(), m.GetSource())
	}
	if m.GetReceivedAt().AsTime().Before(before.Add(-time.Second)) {
		t.Errorf("received_at %v", m.GetReceivedAt().AsTime())
	}
	if string(m.GetRaw()) != bounceBody {
		t.Errorf("raw differs:\n%q\nwant\n%q", m.GetRaw(), bounceBody)
	}
}

func TestRecipientDecisions(t *testing.T) {
	e := start(t, nil)
	tests := []struct {
		name string
		rcpt string
		code int
	}{
		{"bounce address", bounceAddr, 250},
		{"fbl address", fblAddr, 250},
		{"unknown on our domain", "someone@bounces.example.test", 550},
		{"relay to another domain", "victim@gmail.example", 554},
		{"relay with source route", "@bounces.example.test:victim@gmail.example", 554},
		{"relay with percent hack", "victim%gmail.example@relay.example", 554},
	}
	c := hello(t, e.addr)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.cmd(250, "RSET")
			c.cmd(250, "MAIL FROM:<sender@example.org>")
			c.t = t
			c.cmd(tt.code, "RCPT TO:<%s>", tt.rcpt)
		})
	}
	if n := count(t, e.js); n != 0 {
		t.Errorf("%d messages stored without DATA", n)
	}
}

func TestRelayAttemptStoresNothing(t *testing.T) {
	e := start(t, nil)
	c := hello(t, e.addr)
	c.cmd(250, "MAIL FROM:<spammer@example.org>")
	c.cmd(554, "RCPT TO:<victim@gmail.example>")
	// No accepted recipient: DATA is refused.
	c.cmd(502, "DATA")
	if n := count(t, e.js); n != 0 {
		t.Errorf("%d messages stored", n)
	}
}

func TestOneKindPerTransaction(t *testing.T) {
	e := start(t, nil)
	c := hello(t, e.addr)
	c.cmd(250, "MAIL FROM:<>")
	c.cmd(250, "RCPT TO:<%s>", bounceAddr)
	c.cmd(452, "RCPT TO:<%s>", fblAddr)
	c.data(250, bounceBody)
	c.cmd(250, "MAIL FROM:<>")
	c.cmd(250, "RCPT TO:<%s>", fblAddr)
	c.data(250, "Subject: report\r\n\r\nabuse\r\n")
	if got := stored(t, e.js, mailwavev1.InboundKind_INBOUND_KIND_FBL); string(got.GetRaw()) != "Subject: report\r\n\r\nabuse\r\n" {
		t.Errorf("fbl raw %q", got.GetRaw())
	}
}

func TestClassifierRoutesReplies(t *testing.T) {
	e := start(t, nil)
	c := hello(t, e.addr)
	c.cmd(250, "MAIL FROM:<ana@example.org>")
	c.cmd(250, "RCPT TO:<%s>", bounceAddr)
	c.data(250, "From: ana@example.org\r\nAuto-Submitted: auto-replied\r\nSubject: vacation\r\n\r\naway\r\n")
	m := stored(t, e.js, mailwavev1.InboundKind_INBOUND_KIND_REPLY)
	if m.GetKind() != mailwavev1.InboundKind_INBOUND_KIND_REPLY || m.GetMailFrom() != "ana@example.org" {
		t.Errorf("kind %v from %q", m.GetKind(), m.GetMailFrom())
	}
}

func TestSizeLimit(t *testing.T) {
	e := start(t, func(c *inbound.Config) { c.MaxMessageBytes = 1000 })
	c := hello(t, e.addr)
	// Declared too large: refused at MAIL (RFC 1870 §6.1).
	c.cmd(552, "MAIL FROM:<> SIZE=5000")
	// Undeclared and too large: refused at the end of DATA.
	c.cmd(250, "MAIL FROM:<>")
	c.cmd(250, "RCPT TO:<%s>", bounceAddr)
	c.data(552, "Subject: big\r\n\r\n"+strings.Repeat("0123456789abcdef\r\n", 100))
	if n := count(t, e.js); n != 0 {
		t.Errorf("%d oversized messages stored", n)
	}
	// A message within the limit still goes through on the same session.
	c.cmd(250, "MAIL FROM:<>")
	c.cmd(250, "RCPT TO:<%s>", bounceAddr)
	c.data(250, bounceBody)
	if n := count(t, e.js); n != 1 {
		t.Errorf("%d messages stored, want 1", n)
	}
}

func TestStoreFailureIsTemporary(t *testing.T) {
	e := start(t, nil)
	ctx := testenv.Context(t)
	// JetStream has no stream for the subject any more: publishing fails.
	if err := e.js.DeleteStream(ctx, mailwavev1.StreamInbound); err != nil {
		t.Fatal(err)
	}
	c := hello(t, e.addr)
	c.cmd(250, "MAIL FROM:<>")
	c.cmd(250, "RCPT TO:<%s>", bounceAddr)
	if msg := c.data(451, bounceBody); !strings.HasPrefix(msg, "4.3.0") {
		t.Errorf("451 text %q", msg)
	}
	// Once the stream is back, the client's retry is stored and answered 250.
	if err := events.Setup(ctx, e.js, events.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	c.cmd(250, "MAIL FROM:<>")
	c.cmd(250, "RCPT TO:<%s>", bounceAddr)
	c.data(250, bounceBody)
	if n := count(t, e.js); n != 1 {
		t.Errorf("%d messages stored, want 1", n)
	}
}

func TestStoredBeforeReply(t *testing.T) {
	// The store blocks until the test lets it go: no 250 may come first.
	release := make(chan struct{})
	entered := make(chan struct{})
	e := start(t, func(c *inbound.Config) {
		c.Store = inbound.StoreFunc(func(ctx context.Context, m *mailwavev1.InboundMessage) error {
			close(entered)
			<-release
			return nil
		})
	})
	c := hello(t, e.addr)
	c.cmd(250, "MAIL FROM:<>")
	c.cmd(250, "RCPT TO:<%s>", bounceAddr)
	c.cmd(354, "DATA")
	w := c.tc.DotWriter()
	_, _ = w.Write([]byte(bounceBody))
	_ = w.Close()
	<-entered
	replied := make(chan int, 1)
	go func() {
		code, _, _ := c.tc.ReadResponse(0)
		replied <- code
	}()
	select {
	case code := <-replied:
		t.Fatalf("replied %d while the store was still running", code)
	default:
	}
	close(release)
	if code := <-replied; code != 250 {
		t.Errorf("reply %d after store, want 250", code)
	}
}

func TestConnectionLimitPerIP(t *testing.T) {
	e := start(t, func(c *inbound.Config) { c.MaxConnsPerIP = 2 })
	a := dial(t, e.addr)
	a.expect(220)
	b := dial(t, e.addr)
	b.expect(220)
	third := dial(t, e.addr)
	if msg := third.expect(421); !strings.Contains(msg, "too many connections from your IP") {
		t.Errorf("421 text %q", msg)
	}
	// Closing one frees its slot.
	a.cmd(221, "QUIT")
	testenv.Eventually(t, 5*time.Second, func() bool {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			return false
		}
		defer c.Close()
		tc := textproto.NewConn(c)
		code, _, _ := tc.ReadResponse(0)
		return code == 220
	}, "a freed slot was not reused")
}

func TestSessionTimeout(t *testing.T) {
	e := start(t, func(c *inbound.Config) { c.SessionTimeout = 300 * time.Millisecond })
	c := hello(t, e.addr)
	// Busy or not, the session ends: the server says 421 and closes.
	code, _, err := c.tc.ReadResponse(0)
	if code != 421 {
		t.Fatalf("reply %d (%v), want 421 at the end of the session", code, err)
	}
	if _, err := c.tc.ReadLine(); err == nil {
		t.Error("connection still open after 421")
	}
}

func TestSTARTTLS(t *testing.T) {
	cert, err := tls.X509KeyPair(testCert, testKey)
	if err != nil {
		t.Fatal(err)
	}
	e := start(t, func(c *inbound.Config) { c.TLS = &tls.Config{Certificates: []tls.Certificate{cert}} })
	sc, err := smtp.DialStartTLS(e.addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if _, ok := sc.TLSConnectionState(); !ok {
		t.Fatal("no TLS after STARTTLS")
	}
	if err := sc.SendMail("", []string{bounceAddr}, strings.NewReader(bounceBody)); err != nil {
		t.Fatal(err)
	}
	if m := stored(t, e.js, mailwavev1.InboundKind_INBOUND_KIND_DSN); !m.GetTls() {
		t.Error("tls not recorded")
	}
}

func TestNewRejectsIncompleteConfig(t *testing.T) {
	store := inbound.StoreFunc(func(context.Context, *mailwavev1.InboundMessage) error { return nil })
	for name, cfg := range map[string]inbound.Config{
		"no policy":      {Store: store},
		"no store":       {Policy: policy{}},
		"negative limit": {Policy: policy{}, Store: store, MaxConnsPerIP: -1},
	} {
		if _, err := inbound.New(cfg); !errors.Is(err, inbound.ErrConfig) {
			t.Errorf("%s: err %v, want ErrConfig", name, err)
		}
	}
}

func TestAddressesPolicy(t *testing.T) {
	p := inbound.Addresses(mailwavev1.InboundKind_INBOUND_KIND_FBL, "FBL@fbl.example.test", "arf@reports.example.test")
	tests := []struct {
		rcpt string
		want error
	}{
		{"fbl@FBL.example.test", nil},
		{"arf@reports.example.test", nil},
		{"other@fbl.example.test", inbound.ErrUnknownRecipient},
		{"victim@gmail.example", inbound.ErrRelayDenied},
		{"no-domain", inbound.ErrRelayDenied},
	}
	for _, tt := range tests {
		kind, err := p.Recipient(tt.rcpt)
		if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
			t.Errorf("%s: err %v, want %v", tt.rcpt, err, tt.want)
		}
		if tt.want == nil && kind != mailwavev1.InboundKind_INBOUND_KIND_FBL {
			t.Errorf("%s: kind %v", tt.rcpt, kind)
		}
	}
}

// A client that sends a message again (it did not see our 250, or retries
// anyway) gets it stored once: the id is a digest of envelope and bytes.
func TestSameMessageTwiceIsStoredOnce(t *testing.T) {
	e := start(t, nil)
	for range 2 {
		c := hello(t, e.addr)
		c.cmd(250, "MAIL FROM:<>")
		c.cmd(250, "RCPT TO:<%s>", bounceAddr)
		c.data(250, bounceBody)
		c.cmd(221, "QUIT")
	}
	if n := count(t, e.js); n != 1 {
		t.Errorf("%d messages stored, want 1", n)
	}
	// Another message is another id.
	c := hello(t, e.addr)
	c.cmd(250, "MAIL FROM:<>")
	c.cmd(250, "RCPT TO:<%s>", bounceAddr)
	c.data(250, bounceBody+"Second report.\r\n")
	if n := count(t, e.js); n != 2 {
		t.Errorf("%d messages stored, want 2", n)
	}
	if a, b := inbound.MessageID("", []string{bounceAddr}, []byte(bounceBody)), inbound.MessageID("", []string{bounceAddr}, []byte(bounceBody+"x")); a == b || len(a) != 32 {
		t.Errorf("ids %q %q", a, b)
	}
}

// Run drains: once its context ends it takes no new connection, lets the
// session in progress finish its message, and returns after it.
func TestRunDrainsSessionsInProgress(t *testing.T) {
	ns := testenv.NATS(t)
	_, js := testenv.JetStream(t, ns)
	srv, err := inbound.New(inbound.Config{Domain: "mx.bounces.example.test", Policy: policy{},
		Store: inbound.JetStream(events.NewPublisher(js))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testenv.Context(t))
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln, 20*time.Second) }()

	c := hello(t, ln.Addr().String())
	c.cmd(250, "MAIL FROM:<>")
	c.cmd(250, "RCPT TO:<%s>", bounceAddr)
	cancel()
	testenv.Eventually(t, 10*time.Second, func() bool {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			_ = conn.Close()
		}
		return err != nil
	}, "the listener still takes connections")
	select {
	case err := <-done:
		t.Fatalf("Run returned with a session in progress: %v", err)
	default:
	}
	c.data(250, bounceBody)
	c.cmd(221, "QUIT")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return once the last session ended")
	}
	if n := count(t, js); n != 1 {
		t.Fatalf("%d messages stored, want the one of the drained session", n)
	}
}
