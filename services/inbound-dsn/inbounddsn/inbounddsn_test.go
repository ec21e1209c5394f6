package inbounddsn_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/config"
	"github.com/mailwave/mailwave/pkg/embedded"
	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/inbound"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/testenv"
	"github.com/mailwave/mailwave/pkg/verp"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/inbound-dsn/inbounddsn"
)

const (
	bounceDomain = "bounces.shop.test"
	verpKey      = "inbound-dsn-test-key-0123456789"
	tenant       = "acme"
	brand        = "shop"
)

// fixture is one inbound-dsn running against its own NATS server and
// Redis, with its SMTP receiver on a loopback port.
type fixture struct {
	t        *testing.T
	ns       *server.Server
	natsDir  string
	natsPort int
	js       jetstream.JetStream
	rdb      *redis.Client
	signer   *verp.Signer
	smtp     string
	http     string
}

// start runs the service with the test's tune applied to its
// configuration, and stops it at cleanup.
func start(t *testing.T, tune func(*inbounddsn.Config)) *fixture {
	t.Helper()
	f := &fixture{t: t, natsDir: t.TempDir()}
	ns, err := embedded.StartNATS(embedded.NATSOptions{Dir: f.natsDir, Port: -1, Name: "inbound-dsn-test"})
	if err != nil {
		t.Fatal(err)
	}
	f.ns = ns
	f.natsPort = ns.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { f.ns.Shutdown(); f.ns.WaitForShutdown() })
	var redisURL string
	f.rdb, redisURL = testenv.Redis(t)
	nc := testenv.Connect(t, ns)
	if f.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	if f.signer, err = verp.NewSigner([]byte(verpKey)); err != nil {
		t.Fatal(err)
	}
	smtpAddr := make(chan net.Addr, 1)
	httpAddr := make(chan net.Addr, 1)
	cfg := inbounddsn.Config{
		Common: service.Common{NATSURL: ns.ClientURL(), RedisURL: redisURL, HTTPAddr: "127.0.0.1:0", LogLevel: "info",
			Replicas: 1, DrainTimeout: 10 * time.Second},
		SMTPAddr: "127.0.0.1:0", BounceDomains: []string{bounceDomain}, VERPKeys: []string{verpKey},
		Settings: inbound.Settings{MaxMessageBytes: 64 << 10, MaxConnsPerIP: 10, MaxConns: 100,
			SessionTimeout: time.Minute, CommandTimeout: 30 * time.Second, StoreTimeout: 5 * time.Second},
		Workers:      2,
		OnSMTPListen: func(a net.Addr) { smtpAddr <- a },
	}
	if tune != nil {
		tune(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- inbounddsn.Run(ctx, cfg, log, service.Options{OnListen: func(a net.Addr) { httpAddr <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("inbound-dsn: %v", err)
		}
	})
	for f.smtp == "" || f.http == "" {
		select {
		case a := <-smtpAddr:
			f.smtp = a.String()
		case a := <-httpAddr:
			f.http = a.String()
		case err := <-done:
			t.Fatalf("inbound-dsn stopped: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("inbound-dsn did not start")
		}
	}
	return f
}

// record stores what the planner remembers of a message to rcpt and
// returns its signed return path.
func (f *fixture) record(id, rcpt string, expires time.Time) (*mailwavev1.MessageRecord, string) {
	f.t.Helper()
	ctx := testenv.Context(f.t)
	rp, err := f.signer.Address(id, rcpt, bounceDomain)
	if err != nil {
		f.t.Fatal(err)
	}
	rec := &mailwavev1.MessageRecord{
		MessageId: id, RequestId: "req-" + id[:6], Tenant: tenant, Brand: brand, MailStream: "newsletter",
		Recipient: rcpt, SendingDomain: "shop.test", Site: "receiver", ReturnPath: rp, HeaderMessageId: id + "@shop.test",
		SourceIp: "192.0.2.10", CreatedAt: timestamppb.Now(), ExpiresAt: timestamppb.New(expires),
	}
	kv, err := f.js.KeyValue(ctx, mailwavev1.BucketMessages)
	if err != nil {
		f.t.Fatal(err)
	}
	data, _ := proto.Marshal(rec)
	if _, err := kv.Put(ctx, id, data); err != nil {
		f.t.Fatal(err)
	}
	return rec, rp
}

// conv is a raw SMTP conversation, so that every reply code is seen.
type conv struct {
	t    *testing.T
	conn net.Conn
	tc   *textproto.Conn
}

func (f *fixture) dial() *conv {
	f.t.Helper()
	c, err := net.Dial("tcp", f.smtp)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return &conv{t: f.t, conn: c, tc: textproto.NewConn(c)}
}

func (c *conv) reply() (int, string) {
	c.t.Helper()
	code, msg, err := c.tc.ReadResponse(0)
	if err != nil && code == 0 {
		c.t.Fatalf("read reply: %v", err)
	}
	return code, msg
}

func (c *conv) expect(code int) string {
	c.t.Helper()
	got, msg := c.reply()
	if got != code {
		c.t.Fatalf("reply %d %q, want %d", got, msg, code)
	}
	return msg
}

func (c *conv) cmd(format string, args ...any) (int, string) {
	c.t.Helper()
	if err := c.tc.PrintfLine(format, args...); err != nil {
		c.t.Fatal(err)
	}
	return c.reply()
}

func (c *conv) must(code int, format string, args ...any) string {
	c.t.Helper()
	got, msg := c.cmd(format, args...)
	if got != code {
		c.t.Fatalf("%s: reply %d %q, want %d", fmt.Sprintf(format, args...), got, msg, code)
	}
	return msg
}

// data sends a message body and returns the reply to its end.
func (c *conv) data(body string) (int, string) {
	c.t.Helper()
	c.must(354, "DATA")
	w := c.tc.DotWriter()
	if _, err := io.WriteString(w, body); err != nil {
		c.t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		c.t.Fatal(err)
	}
	return c.reply()
}

func (f *fixture) hello() *conv {
	c := f.dial()
	c.expect(220)
	c.must(250, "EHLO mx.receiver.test")
	return c
}

// deliver sends one message from the null sender to rcpt and returns the
// reply to its end of data.
func (f *fixture) deliver(rcpt, body string) (int, string) {
	f.t.Helper()
	c := f.hello()
	c.must(250, "MAIL FROM:<>")
	c.must(250, "RCPT TO:<%s>", rcpt)
	code, msg := c.data(body)
	_, _ = c.cmd("QUIT")
	_ = c.conn.Close()
	return code, msg
}

// dsn is a Postfix-style RFC 3464 report on rcpt, returning the header of
// the original message (whose Message-ID is origID).
func dsn(rcpt, returnPath, status, diag, origID string) string {
	return "From: Mail Delivery System <MAILER-DAEMON@mx.receiver.test>\r\n" +
		"To: <" + returnPath + ">\r\n" +
		"Subject: Undelivered Mail Returned to Sender\r\n" +
		"Auto-Submitted: auto-replied\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\n" +
		"This is the mail system at host mx.receiver.test.\r\n\r\n" +
		"<" + rcpt + ">: host mx.receiver.test[192.0.2.25] said: " + diag + " (in reply to end of DATA command)\r\n\r\n" +
		"--b1\r\nContent-Type: message/delivery-status\r\n\r\n" +
		"Reporting-MTA: dns; mx.receiver.test\r\n\r\n" +
		"Final-Recipient: rfc822; " + rcpt + "\r\nAction: failed\r\nStatus: " + status + "\r\n" +
		"Remote-MTA: dns; mx.receiver.test\r\nDiagnostic-Code: smtp; " + diag + "\r\n\r\n" +
		"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n" +
		"From: Shop <news@shop.test>\r\nTo: <" + rcpt + ">\r\nSubject: Offers\r\nMessage-ID: <" + origID + ">\r\n\r\n" +
		"--b1--\r\n"
}

// inboundCount is how many messages INBOUND holds on subject.
func (f *fixture) inboundCount(subject string) uint64 {
	f.t.Helper()
	ctx := testenv.Context(f.t)
	st, err := f.js.Stream(ctx, mailwavev1.StreamInbound)
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		f.t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// last reads the last message on subject of stream into m; false when
// there is none.
func (f *fixture) last(stream, subject string, m proto.Message) bool {
	f.t.Helper()
	ctx := testenv.Context(f.t)
	st, err := f.js.Stream(ctx, stream)
	if err != nil {
		f.t.Fatal(err)
	}
	raw, err := st.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false
	}
	if err != nil {
		f.t.Fatal(err)
	}
	if err := proto.Unmarshal(raw.Data, m); err != nil {
		f.t.Fatal(err)
	}
	return true
}

// metric returns the value of the first sample of a metric line that
// starts with name (labels included), or -1.
func (f *fixture) metric(name string) float64 {
	f.t.Helper()
	resp, err := http.Get("http://" + f.http + "/metrics")
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, name+" ") {
			var v float64
			_, _ = fmt.Sscanf(line[len(name)+1:], "%g", &v)
			return v
		}
	}
	return -1
}

func msgID(n int) string { return fmt.Sprintf("%032x", n) }

func TestReceiverTakesOnlySignedReturnPaths(t *testing.T) {
	f := start(t, nil)
	good, err := f.signer.Address(msgID(1), "ann@receiver.test", bounceDomain)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := verp.NewSigner([]byte("somebody-elses-key-0123456789"))
	forged, _ := other.Address(msgID(1), "ann@receiver.test", bounceDomain)
	tampered := good[:5] + string('a'+(good[5]-'a'+1)%26) + good[6:]
	elsewhere, _ := f.signer.Address(msgID(1), "ann@receiver.test", "bounces.other.test")
	for _, tc := range []struct {
		name, rcpt string
		code       int
		enhanced   string
	}{
		{"signed return path", good, 250, ""},
		{"signed, upper case", strings.ToUpper(good), 250, ""},
		{"postmaster (RFC 5321 §4.5.1)", "postmaster@" + bounceDomain, 250, ""},
		{"Postmaster", "Postmaster@" + strings.ToUpper(bounceDomain), 250, ""},
		{"signed with another key", forged, 550, "5.1.1"},
		{"token altered", tampered, 550, "5.1.1"},
		{"not a token", "news@" + bounceDomain, 550, "5.1.1"},
		{"relay to another domain", "ann@receiver.test", 554, "5.7.1"},
		{"our token on another domain", elsewhere, 554, "5.7.1"},
		{"source route", "@" + bounceDomain + ":ann@receiver.test", 554, "5.7.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.hello()
			defer c.conn.Close()
			c.must(250, "MAIL FROM:<>")
			code, msg := c.cmd("RCPT TO:<%s>", tc.rcpt)
			if code != tc.code || !strings.HasPrefix(msg, tc.enhanced) {
				t.Fatalf("RCPT TO:<%s>: %d %s, want %d %s", tc.rcpt, code, msg, tc.code, tc.enhanced)
			}
		})
	}
	// A refused recipient never gets as far as DATA: nothing is stored.
	c := f.hello()
	c.must(250, "MAIL FROM:<>")
	c.must(554, "RCPT TO:<ann@receiver.test>")
	if code, msg := c.cmd("DATA"); code/100 != 5 {
		t.Errorf("DATA without an accepted recipient: %d %s", code, msg)
	}
	if n := f.inboundCount(mailwavev1.SubjectInbound(mailwavev1.InboundKind_INBOUND_KIND_DSN)); n != 0 {
		t.Errorf("%d messages stored", n)
	}
}

// The raw message is in the INBOUND stream when the 250 arrives, exactly
// as sent, with its envelope.
func TestStoredBeforeTheReply(t *testing.T) {
	f := start(t, nil)
	_, rp := f.record(msgID(2), "ann@receiver.test", time.Now().Add(time.Hour))
	body := dsn("ann@receiver.test", rp, "5.1.1", "550 5.1.1 <ann@receiver.test>: Recipient address rejected: User unknown", msgID(2)+"@shop.test")
	if code, msg := f.deliver(rp, body); code != 250 {
		t.Fatalf("end of data: %d %s", code, msg)
	}
	// No waiting: the 250 means it is stored.
	var in mailwavev1.InboundMessage
	if !f.last(mailwavev1.StreamInbound, mailwavev1.SubjectInbound(mailwavev1.InboundKind_INBOUND_KIND_DSN), &in) {
		t.Fatal("the message was answered 250 but is not in INBOUND")
	}
	if string(in.GetRaw()) != body || in.GetMailFrom() != "" || len(in.GetRcptTo()) != 1 || in.GetRcptTo()[0] != rp ||
		in.GetRemoteIp() != "127.0.0.1" || in.GetHelo() != "mx.receiver.test" {
		t.Errorf("stored %+v", &in)
	}
}

// With NATS down nothing can be stored, so nothing is acknowledged: the
// client gets a 4xx and keeps the message. Its retry once NATS is back is
// stored once, even though the first attempt reached the stream after the
// receiver had given up on it.
func TestNATSDownMeansTryAgainLater(t *testing.T) {
	f := start(t, func(c *inbounddsn.Config) { c.StoreTimeout = time.Second })
	_, rp := f.record(msgID(3), "bob@receiver.test", time.Now().Add(time.Hour))
	subject := mailwavev1.SubjectInbound(mailwavev1.InboundKind_INBOUND_KIND_DSN)
	first := dsn("bob@receiver.test", rp, "5.1.1", "550 5.1.1 unknown", msgID(3)+"@shop.test")
	if code, _ := f.deliver(rp, first); code != 250 {
		t.Fatalf("first message: %d", code)
	}

	f.ns.Shutdown()
	f.ns.WaitForShutdown()
	body := dsn("bob@receiver.test", rp, "5.2.2", "552 5.2.2 mailbox full", msgID(3)+"@shop.test")
	code, msg := f.deliver(rp, body)
	if code/100 != 4 {
		t.Fatalf("with NATS down the end of data got %d %s, want 4xx", code, msg)
	}

	ns, err := embedded.StartNATS(embedded.NATSOptions{Dir: f.natsDir, Port: f.natsPort, Name: "inbound-dsn-test"})
	if err != nil {
		t.Fatal(err)
	}
	f.ns = ns
	// The sending MTA retries until the receiver stores it.
	testenv.Eventually(t, 30*time.Second, func() bool {
		code, _ := f.deliver(rp, body)
		return code == 250
	}, "the retry was never accepted")
	testenv.Eventually(t, 10*time.Second, func() bool { return f.inboundCount(subject) >= 2 }, "retry not stored")
	if n := f.inboundCount(subject); n != 2 {
		t.Errorf("INBOUND holds %d bounces, want 2 (the retried one once)", n)
	}
}

func TestMessageSizeLimit(t *testing.T) {
	f := start(t, func(c *inbounddsn.Config) { c.MaxMessageBytes = 4096 })
	c := f.dial()
	c.expect(220)
	if ehlo := c.must(250, "EHLO mx.receiver.test"); !strings.Contains(ehlo, "SIZE 4096") {
		t.Errorf("EHLO does not announce the limit: %q", ehlo)
	}
	c.must(250, "MAIL FROM:<>")
	c.must(250, "RCPT TO:<postmaster@%s>", bounceDomain)
	big := "Subject: big\r\n\r\n" + strings.Repeat("0123456789abcdef\r\n", 400)
	if code, msg := c.data(big); code != 552 {
		t.Errorf("oversized message: %d %s, want 552", code, msg)
	}
	// Announced in advance, it is refused at MAIL FROM (RFC 1870).
	c.must(552, "MAIL FROM:<> SIZE=100000")
	if n := f.inboundCount(mailwavev1.SubjectInbound(mailwavev1.InboundKind_INBOUND_KIND_DSN)); n != 0 {
		t.Errorf("%d messages stored", n)
	}
}

func TestConnectionsPerClientIP(t *testing.T) {
	f := start(t, func(c *inbounddsn.Config) { c.MaxConnsPerIP = 2 })
	a, b := f.dial(), f.dial()
	a.expect(220)
	b.expect(220)
	third := f.dial()
	if code, msg := third.reply(); code != 421 {
		t.Fatalf("third connection: %d %s, want 421", code, msg)
	}
	// The slot comes back when a session ends.
	a.must(221, "QUIT")
	testenv.Eventually(t, 10*time.Second, func() bool {
		c := f.dial()
		code, _ := c.reply()
		_ = c.conn.Close()
		return code == 220
	}, "the freed slot was not given back")
}

// A client that says nothing is dropped after the command timeout; one that
// keeps talking is dropped at the end of the session's time.
func TestSessionAndCommandTimeouts(t *testing.T) {
	f := start(t, func(c *inbounddsn.Config) {
		c.CommandTimeout = time.Second
		c.SessionTimeout = 2 * time.Second
	})
	t.Run("idle", func(t *testing.T) {
		c := f.dial()
		c.expect(220)
		began := time.Now()
		code, _, err := c.tc.ReadResponse(0)
		if err == nil && code != 421 {
			t.Fatalf("idle client got %d, want 421 or a closed connection", code)
		}
		if d := time.Since(began); d > 10*time.Second {
			t.Errorf("idle client dropped after %s", d)
		}
	})
	t.Run("busy", func(t *testing.T) {
		c := f.dial()
		c.expect(220)
		began := time.Now()
		answered := 0
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			if time.Since(began) > 15*time.Second {
				t.Fatal("a busy session was never ended")
			}
			if err := c.tc.PrintfLine("NOOP"); err != nil {
				break
			}
			code, _, err := c.tc.ReadResponse(0)
			if err != nil || code != 250 {
				break
			}
			answered++
		}
		// Each NOOP came within the command timeout, so only the
		// session limit can have ended it.
		if answered < 3 {
			t.Errorf("only %d commands answered before the session ended", answered)
		}
	})
}

// sink is the reply relay: an SMTP server that keeps what it receives.
type sink struct {
	mu   sync.Mutex
	msgs []sunk
	addr string
}

type sunk struct {
	from string
	to   []string
	data string
}

func startSink(t *testing.T) *sink {
	t.Helper()
	s := &sink{}
	srv := smtp.NewServer(s)
	srv.Domain = "relay.shop.test"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

func (s *sink) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s}, nil }

func (s *sink) received() []sunk {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sunk(nil), s.msgs...)
}

type sinkSession struct {
	s  *sink
	m  sunk
	to []string
}

func (x *sinkSession) Mail(from string, _ *smtp.MailOptions) error { x.m.from = from; return nil }
func (x *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.m.to = append(x.m.to, to)
	return nil
}
func (x *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	x.m.data = string(b)
	x.s.mu.Lock()
	x.s.msgs = append(x.s.msgs, x.m)
	x.s.mu.Unlock()
	x.m = sunk{}
	return nil
}
func (x *sinkSession) Reset()        { x.m = sunk{} }
func (x *sinkSession) Logout() error { return nil }

func writeThresholds(t *testing.T, doc string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "thresholds.yaml")
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Replies and auto-replies to a return path are kept apart from bounces
// and forwarded to the brand's reply address through the relay; a brand
// without one keeps them. None of them counts as a bounce.
func TestRepliesAreRoutedApart(t *testing.T) {
	relay := startSink(t)
	thresholds := writeThresholds(t, "default: {hard: 1, soft: 1, window: 720h}\n"+
		"brands:\n  acme/shop: {hard: 1, soft: 1, window: 720h, reply_to: care@shop.test}\n")
	f := start(t, func(c *inbounddsn.Config) {
		c.ThresholdsFile = thresholds
		c.ReplyRelay = relay.addr
		c.Workers = 1 // in order, so "nothing forwarded" can be checked
	})
	// A brand without a reply address: kept.
	_, rpOther := f.record(msgID(10), "cy@receiver.test", time.Now().Add(time.Hour))
	kvOther, _ := f.js.KeyValue(testenv.Context(t), mailwavev1.BucketMessages)
	other := &mailwavev1.MessageRecord{MessageId: msgID(10), Tenant: tenant, Brand: "outlet", Recipient: "cy@receiver.test", ReturnPath: rpOther}
	data, _ := proto.Marshal(other)
	if _, err := kvOther.Put(testenv.Context(t), msgID(10), data); err != nil {
		t.Fatal(err)
	}
	_, rpVacation := f.record(msgID(11), "di@receiver.test", time.Now().Add(time.Hour))
	_, rpHuman := f.record(msgID(12), "ed@receiver.test", time.Now().Add(time.Hour))

	kept := "From: Cy <cy@receiver.test>\r\nTo: <" + rpOther + ">\r\nSubject: Re: Offers\r\nAuto-Submitted: auto-replied\r\n\r\nI am out of the office.\r\n"
	vacation := "From: Di <di@receiver.test>\r\nTo: <" + rpVacation + ">\r\nSubject: Automatic reply: Offers\r\nAuto-Submitted: auto-replied\r\nX-Autoreply: yes\r\n\r\nI am away until Monday.\r\n"
	human := "From: Ed <ed@receiver.test>\r\nTo: <" + rpHuman + ">\r\nSubject: Re: Offers\r\nIn-Reply-To: <" + msgID(12) + "@shop.test>\r\n\r\nDo you deliver to Lyon?\r\n"
	for _, m := range []struct{ rcpt, body string }{{rpOther, kept}, {rpVacation, vacation}, {rpHuman, human}} {
		if code, msg := f.deliver(m.rcpt, m.body); code != 250 {
			t.Fatalf("reply refused: %d %s", code, msg)
		}
	}
	replies := mailwavev1.SubjectInbound(mailwavev1.InboundKind_INBOUND_KIND_REPLY)
	if n := f.inboundCount(replies); n != 3 {
		t.Errorf("%d messages on %s, want 3", n, replies)
	}
	if n := f.inboundCount(mailwavev1.SubjectInbound(mailwavev1.InboundKind_INBOUND_KIND_DSN)); n != 0 {
		t.Errorf("%d replies stored as bounces", n)
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return len(relay.received()) >= 2 }, "replies not forwarded")
	got := relay.received()
	if len(got) != 2 {
		t.Fatalf("relay received %d messages, want the two of the brand with a reply address", len(got))
	}
	for i, want := range []string{vacation, human} {
		m := got[i]
		if m.from != "" || len(m.to) != 1 || m.to[0] != "care@shop.test" {
			t.Errorf("forward %d envelope from %q to %v", i, m.from, m.to)
		}
		if !strings.HasSuffix(m.data, want) || !strings.Contains(m.data, "Resent-To: <care@shop.test>") {
			t.Errorf("forward %d:\n%s", i, m.data)
		}
	}
	if v := f.metric(`mailwave_inbound_dsn_replies_total{outcome="kept"}`); v != 1 {
		t.Errorf("kept replies metric %v, want 1", v)
	}
	// Never a bounce: no counter, no event, no suppression.
	keys, err := f.rdb.Keys(testenv.Context(t), "mailwave:bounces:*").Result()
	if err != nil || len(keys) != 0 {
		t.Errorf("bounce counters %v (%v)", keys, err)
	}
	var ev mailwavev1.DeliveryEvent
	if f.last(mailwavev1.StreamEvents, mailwavev1.SubjectEvent(mailwavev1.EventKind_EVENT_KIND_BOUNCED, tenant), &ev) {
		t.Errorf("a reply made a bounce event: %v", &ev)
	}
}

// A DSN to a signed return path is reported, counted and, past the brand's
// threshold, suppresses the address for the brand.
func TestBounceCountsAndSuppresses(t *testing.T) {
	thresholds := writeThresholds(t, "default: {hard: 1, soft: 5, window: 720h}\n"+
		"brands:\n  shop: {hard: 2, soft: 5, window: 720h}\n")
	f := start(t, func(c *inbounddsn.Config) { c.ThresholdsFile = thresholds })
	ctx := testenv.Context(t)
	const rcpt = "gone@receiver.test"
	supp, err := f.js.KeyValue(ctx, mailwavev1.BucketSuppressions)
	if err != nil {
		t.Fatal(err)
	}
	suppKey := mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND, tenant, brand, "", rcpt)
	counter := inbounddsn.CounterKey("hard", tenant, brand, rcpt)
	for i, id := range []string{msgID(20), msgID(21)} {
		_, rp := f.record(id, rcpt, time.Now().Add(time.Hour))
		body := dsn(rcpt, rp, "5.1.1", "550 5.1.1 <"+rcpt+">: Recipient address rejected: User unknown in local recipient table", id+"@shop.test")
		if code, msg := f.deliver(rp, body); code != 250 {
			t.Fatalf("dsn %d: %d %s", i, code, msg)
		}
		testenv.Eventually(t, 20*time.Second, func() bool {
			n, _ := f.rdb.ZCard(ctx, counter).Result()
			return n == int64(i+1)
		}, "hard bounce %d not counted", i+1)
		var ev mailwavev1.DeliveryEvent
		testenv.Eventually(t, 10*time.Second, func() bool {
			return f.last(mailwavev1.StreamEvents, mailwavev1.SubjectEvent(mailwavev1.EventKind_EVENT_KIND_BOUNCED, tenant), &ev) && ev.GetMessageId() == id
		}, "no bounce event for %s", id)
		if ev.GetOrigin() != mailwavev1.Origin_ORIGIN_DSN || ev.GetReason() != "userunknown" || ev.GetBounceClass() != mailwavev1.BounceClass_BOUNCE_CLASS_HARD ||
			ev.GetEnhancedCode() != "5.1.1" || ev.GetSmtpCode() != 550 || ev.GetRecipient() != rcpt || ev.GetBrand() != brand {
			t.Errorf("bounce event %v", &ev)
		}
		var rep mailwavev1.BounceReport
		if !f.last(mailwavev1.StreamReports, mailwavev1.SubjectBounceReport(tenant), &rep) || rep.GetCorrelation().GetMessageId() != id ||
			!rep.GetCorrelation().GetVerified() || rep.GetCorrelation().GetMethod() != "verp" || len(rep.GetRecords()) != 1 {
			t.Errorf("bounce report %v", &rep)
		}
		_, err := supp.Get(ctx, suppKey)
		if i == 0 && !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatalf("suppressed after one hard bounce, the brand's threshold is two (%v)", err)
		}
	}
	var entry jetstream.KeyValueEntry
	testenv.Eventually(t, 10*time.Second, func() bool {
		entry, err = supp.Get(ctx, suppKey)
		return err == nil
	}, "not suppressed after two hard bounces")
	var s mailwavev1.Suppression
	if err := proto.Unmarshal(entry.Value(), &s); err != nil {
		t.Fatal(err)
	}
	if s.GetReason() != "hardbounce" || s.GetOrigin() != mailwavev1.Origin_ORIGIN_DSN || s.GetEvidence()["bounces"] != "2" {
		t.Errorf("suppression %v", &s)
	}
}

// A bounce that reaches postmaster with our Message-ID but no signed
// return path is reported — it may be a forgery — and changes nothing.
func TestUnsignedBounceChangesNothing(t *testing.T) {
	f := start(t, nil)
	ctx := testenv.Context(t)
	const rcpt = "fay@receiver.test"
	f.record(msgID(30), rcpt, time.Now().Add(time.Hour))
	body := dsn(rcpt, "postmaster@"+bounceDomain, "5.1.1", "550 5.1.1 User unknown", msgID(30)+"@shop.test")
	if code, msg := f.deliver("postmaster@"+bounceDomain, body); code != 250 {
		t.Fatalf("%d %s", code, msg)
	}
	var rep mailwavev1.BounceReport
	testenv.Eventually(t, 20*time.Second, func() bool {
		return f.last(mailwavev1.StreamReports, mailwavev1.SubjectBounceReport(tenant), &rep)
	}, "no report")
	if c := rep.GetCorrelation(); c.GetMethod() != "message-id" || c.GetVerified() || c.GetMessageId() != msgID(30) {
		t.Errorf("correlation %v", c)
	}
	// The report was published after everything that could have been
	// done; nothing was.
	if n, _ := f.rdb.Exists(ctx, inbounddsn.CounterKey("hard", tenant, brand, rcpt)).Result(); n != 0 {
		t.Error("an unsigned bounce was counted")
	}
	var ev mailwavev1.DeliveryEvent
	if f.last(mailwavev1.StreamEvents, mailwavev1.SubjectEvent(mailwavev1.EventKind_EVENT_KIND_BOUNCED, tenant), &ev) {
		t.Errorf("an unsigned bounce made an event: %v", &ev)
	}
	supp, _ := f.js.KeyValue(ctx, mailwavev1.BucketSuppressions)
	if _, err := supp.Get(ctx, mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND, tenant, brand, "", rcpt)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("suppression lookup: %v, want none", err)
	}
	if v := f.metric("mailwave_inbound_dsn_unverified_total"); v != 1 {
		t.Errorf("unverified metric %v", v)
	}
}

// A mailbox reported full after acceptance is planned again within the
// message's max age; past it, it is a soft bounce. A delivery resets the
// soft count.
func TestMailboxFullAfterAcceptance(t *testing.T) {
	thresholds := writeThresholds(t, "default: {hard: 1, soft: 3, window: 720h}\nretry: ['4', '5.2.2']\nretry_after: 10m\n")
	f := start(t, func(c *inbounddsn.Config) { c.ThresholdsFile = thresholds })
	ctx := testenv.Context(t)
	const rcpt = "full@receiver.test"
	full := "552 5.2.2 <" + rcpt + ">: Mailbox full"

	_, rp := f.record(msgID(40), rcpt, time.Now().Add(time.Hour))
	before := time.Now()
	if code, _ := f.deliver(rp, dsn(rcpt, rp, "5.2.2", full, msgID(40)+"@shop.test")); code != 250 {
		t.Fatal("dsn refused")
	}
	var ev mailwavev1.DeliveryEvent
	testenv.Eventually(t, 20*time.Second, func() bool {
		return f.last(mailwavev1.StreamEvents, mailwavev1.SubjectEvent(mailwavev1.EventKind_EVENT_KIND_DEFERRED, tenant), &ev)
	}, "no deferred event")
	next := ev.GetNextAttemptAt().AsTime()
	if ev.GetMessageId() != msgID(40) || ev.GetOrigin() != mailwavev1.Origin_ORIGIN_DSN || ev.GetReason() != "mailboxfull" ||
		next.Before(before.Add(10*time.Minute)) || next.After(time.Now().Add(10*time.Minute)) {
		t.Errorf("deferred event %v", &ev)
	}
	if n, _ := f.rdb.Exists(ctx, inbounddsn.CounterKey("soft", tenant, brand, rcpt)).Result(); n != 0 {
		t.Error("a retried message was counted as a bounce")
	}

	// Too old to retry: a soft bounce.
	_, rp = f.record(msgID(41), rcpt, time.Now().Add(time.Minute))
	if code, _ := f.deliver(rp, dsn(rcpt, rp, "5.2.2", full, msgID(41)+"@shop.test")); code != 250 {
		t.Fatal("dsn refused")
	}
	soft := inbounddsn.CounterKey("soft", tenant, brand, rcpt)
	testenv.Eventually(t, 20*time.Second, func() bool { n, _ := f.rdb.ZCard(ctx, soft).Result(); return n == 1 }, "soft bounce not counted")
	if !f.last(mailwavev1.StreamEvents, mailwavev1.SubjectEvent(mailwavev1.EventKind_EVENT_KIND_BOUNCED, tenant), &ev) ||
		ev.GetMessageId() != msgID(41) || ev.GetBounceClass() != mailwavev1.BounceClass_BOUNCE_CLASS_SOFT {
		t.Errorf("bounce event %v", &ev)
	}

	// A delivery to the address forgets its soft bounces.
	delivered := &mailwavev1.DeliveryEvent{EventId: "d1", Kind: mailwavev1.EventKind_EVENT_KIND_DELIVERED, Tenant: tenant, Brand: brand,
		Recipient: rcpt, MessageId: msgID(42), OccurredAt: timestamppb.Now()}
	if _, err := events.NewPublisher(f.js).Publish(ctx, mailwavev1.SubjectEvent(delivered.Kind, tenant), delivered); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool { n, _ := f.rdb.Exists(ctx, soft).Result(); return n == 0 }, "soft count not reset")
}

func TestConfigErrorsNameTheVariable(t *testing.T) {
	base := func() inbounddsn.Config {
		return inbounddsn.Config{
			Common: service.Common{NATSURL: "nats://127.0.0.1:4222", RedisURL: "redis://127.0.0.1:6379/0", HTTPAddr: ":8080",
				LogLevel: "info", Replicas: 1, DrainTimeout: time.Second},
			SMTPAddr: ":25", BounceDomains: []string{"bounces.shop.test"}, VERPKeys: []string{verpKey},
			Settings: inbound.Settings{MaxMessageBytes: 1 << 20, MaxConnsPerIP: 10, MaxConns: 100, SessionTimeout: time.Minute,
				CommandTimeout: time.Minute, StoreTimeout: time.Second},
			Workers: 1,
		}
	}
	bad := writeThresholds(t, "default: {hard: -1}\n")
	for _, tc := range []struct {
		variable string
		mod      func(*inbounddsn.Config)
	}{
		{"MW_SMTP_ADDR", func(c *inbounddsn.Config) { c.SMTPAddr = "25" }},
		{"MW_BOUNCE_DOMAINS", func(c *inbounddsn.Config) { c.BounceDomains = nil }},
		{"MW_BOUNCE_DOMAINS", func(c *inbounddsn.Config) { c.BounceDomains = []string{"not a domain"} }},
		{"MW_VERP_KEYS", func(c *inbounddsn.Config) { c.VERPKeys = []string{"short"} }},
		{"MW_BOUNCE_THRESHOLDS", func(c *inbounddsn.Config) { c.ThresholdsFile = bad }},
		{"MW_BOUNCE_THRESHOLDS", func(c *inbounddsn.Config) { c.ThresholdsFile = filepath.Join(t.TempDir(), "missing.yaml") }},
		{"MW_SMTP_MAX_BYTES", func(c *inbounddsn.Config) { c.MaxMessageBytes = 10 }},
		{"MW_SMTP_MAX_CONNS_PER_IP", func(c *inbounddsn.Config) { c.MaxConnsPerIP = 0 }},
		{"MW_SMTP_MAX_CONNS", func(c *inbounddsn.Config) { c.MaxConns = 1 }},
		{"MW_SMTP_SESSION_TIMEOUT", func(c *inbounddsn.Config) { c.SessionTimeout = time.Millisecond }},
		{"MW_SMTP_COMMAND_TIMEOUT", func(c *inbounddsn.Config) { c.CommandTimeout = time.Millisecond }},
		{"MW_SMTP_STORE_TIMEOUT", func(c *inbounddsn.Config) { c.StoreTimeout = time.Millisecond }},
		{"MW_SMTP_TLS_CERT", func(c *inbounddsn.Config) { c.TLSCert = "cert.pem" }},
		{"MW_REPLY_RELAY", func(c *inbounddsn.Config) { c.ReplyRelay = "relay" }},
		{"MW_INBOUND_WORKERS", func(c *inbounddsn.Config) { c.Workers = 0 }},
	} {
		c := base()
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.variable) {
			t.Errorf("%s: error %v does not name it", tc.variable, err)
		}
	}
	c := base()
	if err := c.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

// The README's configuration table names every variable of Config.
func TestREADMEListsEveryVariable(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	// Every variable, those of the embedded receiver settings included;
	// service.Common's have a table of their own.
	common := map[string]bool{}
	for _, line := range config.Describe(&service.Common{}) {
		common[line[:strings.IndexAny(line, " :")]] = true
	}
	n := 0
	for _, line := range config.Describe(&inbounddsn.Config{}) {
		env := line[:strings.IndexAny(line, " :")]
		if common[env] {
			continue
		}
		n++
		if !strings.Contains(string(readme), "`"+env+"`") {
			t.Errorf("README does not document %s", env)
		}
	}
	if n < 10 {
		t.Fatalf("only %d variables found", n)
	}
}
