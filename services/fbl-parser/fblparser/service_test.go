package fblparser_test

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailwave/mailwave/pkg/inbound"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/testenv"
	"github.com/mailwave/mailwave/services/fbl-parser/fblparser"
)

// runningService is fbl-parser's Run in this process.
type runningService struct {
	smtpAddr string
	httpAddr string
	// stop cancels Run and waits for it (also done at cleanup).
	stop func()
}

func startService(t *testing.T, pl *platform, cfg fblparser.Config) *runningService {
	t.Helper()
	cfg.Common = service.Common{NATSURL: pl.natsURL, RedisURL: pl.redisURL, HTTPAddr: "127.0.0.1:0", LogLevel: "info",
		Replicas: 1, DrainTimeout: 10 * time.Second}
	smtpReady := make(chan net.Addr, 1)
	cfg.OnSMTPListen = func(a net.Addr) { smtpReady <- a }
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	httpReady := make(chan net.Addr, 1)
	done := make(chan error, 1)
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	go func() {
		done <- fblparser.Run(ctx, cfg, log, service.Options{OnListen: func(a net.Addr) { httpReady <- a }})
	}()
	var once sync.Once
	rs := &runningService{stop: func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}}
	t.Cleanup(rs.stop)
	select {
	case a := <-httpReady:
		rs.httpAddr = a.String()
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the service did not start")
	}
	if cfg.SMTPEnabled() {
		rs.smtpAddr = (<-smtpReady).String()
	}
	return rs
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// metric returns the sum of the samples of name whose labels include
// every one of labels ("k=\"v\"").
func (rs *runningService) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + rs.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatal(err)
		}
		sum += v
	}
	return sum
}

// sendSMTP sends raw as a provider's MTA would, without TLS.
func sendSMTP(addr, from, rcpt string, raw []byte) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("mta.isp.example"); err != nil {
		return err
	}
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(raw); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// TestServiceReadsMailboxesAndSMTP runs the whole service: a feedback
// mailbox on a real IMAP server, a second mailbox whose login fails, and
// the SMTP intake, with DKIM keys published on a loopback DNS server.
func TestServiceReadsMailboxesAndSMTP(t *testing.T) {
	pl := newPlatform(t)
	srv := newIMAPServer(t)
	d := newDNSServer(t)
	yahoo := reporterKey(t, d, "yahoo.com")

	good := srv.mailbox("google")
	good.Reporters = []string{"google.com"}
	broken := srv.mailbox("broken")
	broken.Password = "not-the-password"
	rs := startService(t, pl, fblparser.Config{
		Mailboxes: []fblparser.Mailbox{broken, good}, SMTPAddr: "127.0.0.1:0", Addresses: []string{"fbl@fbl.mailwave.test"},
		Reporters: []string{"yahoo.com"}, VERPKeys: []string{testVERPKey}, DNSServer: d.addr,
		Settings:     inbound.Settings{MaxMessageBytes: 983040, MaxConnsPerIP: 10, MaxConns: 100, SessionTimeout: time.Minute, CommandTimeout: 30 * time.Second},
		PollInterval: time.Minute, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
		DedupTTL: 24 * time.Hour, CounterTTL: 24 * time.Hour, Workers: 2,
	})

	byIMAP := pl.send(t, "ana@gmail.com", "newsletter", "spring")
	srv.deliver("INBOX", arfAbout(t, byIMAP, "feedback@google.com"))

	bySMTP := pl.send(t, "bo@yahoo.com", "transactional", "")
	signed := sign(t, yahoo, "yahoo.com", arfAbout(t, bySMTP, "feedback@arf.mail.yahoo.com"))
	if err := sendSMTP(rs.smtpAddr, "", "fbl@fbl.mailwave.test", signed); err != nil {
		t.Fatalf("signed report: %v", err)
	}
	// The same report, unsigned: someone who claims to be Yahoo.
	forged := pl.send(t, "cy@yahoo.com", "newsletter", "spring")
	if err := sendSMTP(rs.smtpAddr, "", "fbl@fbl.mailwave.test", arfAbout(t, forged, "feedback@arf.mail.yahoo.com")); err != nil {
		t.Fatalf("unsigned report: %v", err)
	}
	// Not ours to receive.
	var se *smtp.SMTPError
	if err := sendSMTP(rs.smtpAddr, "", "someone@elsewhere.example", signed); !errors.As(err, &se) || se.Code != 554 {
		t.Errorf("relay attempt: %v, want 554", err)
	}
	if err := sendSMTP(rs.smtpAddr, "", "nobody@fbl.mailwave.test", signed); !errors.As(err, &se) || se.Code != 550 {
		t.Errorf("unknown address: %v, want 550", err)
	}

	testenv.Eventually(t, 20*time.Second, func() bool {
		return pl.suppression(t, "ana@gmail.com") != nil && pl.suppression(t, "bo@yahoo.com") != nil &&
			rs.metric(t, "mailwave_fbl_reports_total", `result="untrusted"`) == 1
	}, "reports not acted on")
	if sup := pl.suppression(t, "cy@yahoo.com"); sup != nil {
		t.Errorf("an unsigned report suppressed %v", sup)
	}
	if n := pl.complaints(t); n != 2 {
		t.Errorf("%d complained events, want 2", n)
	}
	if srv.count("Processed") != 1 || srv.count("INBOX") != 0 {
		t.Errorf("Processed %d, INBOX %d", srv.count("Processed"), srv.count("INBOX"))
	}
	// The broken mailbox keeps being retried, with backoff, and held up
	// nothing.
	testenv.Eventually(t, 10*time.Second, func() bool {
		return rs.metric(t, "mailwave_fbl_imap_session_failures_total", `mailbox="broken"`) >= 2
	}, "the broken mailbox was not retried")
	for _, tc := range []struct {
		labels []string
		want   float64
	}{
		{[]string{`source="imap"`, `result="acted"`}, 1},
		{[]string{`source="smtp"`, `result="acted"`}, 1},
		{[]string{`source="smtp"`, `result="untrusted"`}, 1},
	} {
		if got := rs.metric(t, "mailwave_fbl_reports_total", tc.labels...); got != tc.want {
			t.Errorf("reports %v = %v, want %v", tc.labels, got, tc.want)
		}
	}
	if got := rs.metric(t, "mailwave_fbl_received_total", `intake="imap:google"`); got != 1 {
		t.Errorf("received from the mailbox %v, want 1", got)
	}
	if got := rs.metric(t, "mailwave_fbl_smtp_refused_total"); got != 2 {
		t.Errorf("smtp refused %v, want 2", got)
	}
}

// TestServiceRestart stops the whole service and starts it again on the
// same NATS, Redis and mailbox: what was done is not done again, and what
// arrived meanwhile is taken.
func TestServiceRestart(t *testing.T) {
	pl := newPlatform(t)
	srv := newIMAPServer(t)
	cfg := fblparser.Config{
		Mailboxes: []fblparser.Mailbox{srv.mailbox("google")}, SMTPAddr: fblparser.SMTPOff,
		VERPKeys: []string{testVERPKey},
		Settings: inbound.Settings{MaxMessageBytes: 983040, MaxConnsPerIP: 1, MaxConns: 1,
			SessionTimeout: time.Minute, CommandTimeout: time.Minute},
		PollInterval: time.Minute,
		ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
		DedupTTL: 24 * time.Hour, CounterTTL: 24 * time.Hour, Workers: 1,
	}
	srv.deliver("INBOX", arfAbout(t, pl.send(t, "a@gmail.com", "newsletter", "spring"), "feedback@google.com"))
	first := startService(t, pl, cfg)
	testenv.Eventually(t, 20*time.Second, func() bool { return pl.suppression(t, "a@gmail.com") != nil }, "first report")
	first.stop()

	srv.deliver("INBOX", arfAbout(t, pl.send(t, "b@gmail.com", "newsletter", "spring"), "feedback@google.com"))
	startService(t, pl, cfg)
	testenv.Eventually(t, 20*time.Second, func() bool { return pl.suppression(t, "b@gmail.com") != nil }, "report after the restart")
	testenv.Eventually(t, 10*time.Second, func() bool {
		n, err := pendingFBL(pl)
		return err == nil && n == 0
	}, "reports left unprocessed")
	if n := pl.complaints(t); n != 2 {
		t.Errorf("%d complained events, want 2", n)
	}
	if n := pl.inboundFBL(t); n != 2 {
		t.Errorf("INBOUND holds %d reports, want 2", n)
	}
	if srv.count("Processed") != 2 {
		t.Errorf("Processed %d, want 2", srv.count("Processed"))
	}
}
