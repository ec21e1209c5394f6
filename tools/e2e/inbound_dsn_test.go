package e2e_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/mailwave/mailwave/pkg/ispsim"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/inbound-dsn/inbounddsn"
	"github.com/mailwave/mailwave/services/planner/planner"
	"github.com/mailwave/mailwave/tools/stack"
)

// These tests follow bounces that arrive after the remote server accepted
// a message: the simulator's dsn-unknown* and dsn-full* recipients are
// accepted, then a DSN (RFC 3464) goes to the signed return path, which
// the simulator routes to inbound-dsn.

// quickDSNs makes provider's DSN rules fire 50 ms after acceptance
// instead of minutes, and drops its dsn-full* rule when full is false
// (the mailbox was emptied).
func quickDSNs(t *testing.T, sim *ispsim.Sim, provider string, full bool) {
	t.Helper()
	for _, pc := range sim.Profile().Providers {
		if pc.Name != provider {
			continue
		}
		var rules []ispsim.RecipientRule
		for _, r := range pc.Rules {
			if r.Action == ispsim.ActionDSN {
				if strings.HasPrefix(r.Match, "dsn-full") && !full {
					continue
				}
				r.Delay = 50 * time.Millisecond
			}
			rules = append(rules, r)
		}
		if err := sim.Provider(provider).SetRules(rules); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("no provider %s", provider)
}

// waitEvent follows the events of a request until one satisfies match.
func (e *env) waitEvent(t *testing.T, tenant, requestID string, what string, match func(*mailwavev1.DeliveryEvent) bool) *mailwavev1.DeliveryEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(testenv.Context(t), 60*time.Second)
	defer cancel()
	for ev, err := range e.cl.Events(ctx, tenant, requestID, time.Now().Add(-time.Hour)) {
		if err != nil {
			t.Fatalf("events: %v", err)
		}
		if ev.GetRequestId() == requestID && match(ev) {
			return ev
		}
	}
	t.Fatalf("request %s: no %s event", requestID, what)
	return nil
}

func kindOrigin(kind mailwavev1.EventKind, origin mailwavev1.Origin) func(*mailwavev1.DeliveryEvent) bool {
	return func(ev *mailwavev1.DeliveryEvent) bool { return ev.GetKind() == kind && ev.GetOrigin() == origin }
}

func templateRequest(key, brand, rcpt string) *mailwavev1.SendRequest {
	return &mailwavev1.SendRequest{
		IdempotencyKey: key, Tenant: "acme", Brand: brand,
		Recipients: []*mailwavev1.Recipient{{Address: rcpt, Vars: map[string]string{"name": "Ana"}}},
		Content: &mailwavev1.SendRequest_Template{Template: &mailwavev1.Template{
			From: "Shop <news@mailwave.test>", Subject: "Offers for {{.name}}", Text: "Hello {{.name}}"}},
	}
}

func (e *env) redis(t *testing.T) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(e.st.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func (e *env) suppression(t *testing.T, brand, addr string) (*mailwavev1.Suppression, bool) {
	t.Helper()
	ctx := testenv.Context(t)
	kv, err := e.js.KeyValue(ctx, mailwavev1.BucketSuppressions)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(ctx, mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND, "acme", brand, "", addr))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	var s mailwavev1.Suppression
	if err := proto.Unmarshal(entry.Value(), &s); err != nil {
		t.Fatal(err)
	}
	return &s, true
}

// A DSN after acceptance makes a bounce event and, past the brand's
// threshold (one hard bounce by default), a suppression: the next send
// to the address for that brand ends suppressed; another brand still
// mails it.
func TestDSNAfterAcceptanceSuppressesForTheBrand(t *testing.T) {
	e := start(t)
	ctx := testenv.Context(t)
	quickDSNs(t, e.sim, "google", true)
	const rcpt = "dsn-unknown-ana@gmail.com"

	if _, err := e.cl.Send(ctx, templateRequest("dsn-unknown-1", "shop", rcpt)); err != nil {
		t.Fatal(err)
	}
	delivered := e.waitEvent(t, "acme", "dsn-unknown-1", "delivered", kindOrigin(mailwavev1.EventKind_EVENT_KIND_DELIVERED, mailwavev1.Origin_ORIGIN_SMTP))
	bounced := e.waitEvent(t, "acme", "dsn-unknown-1", "bounced by DSN", kindOrigin(mailwavev1.EventKind_EVENT_KIND_BOUNCED, mailwavev1.Origin_ORIGIN_DSN))
	if bounced.GetMessageId() != delivered.GetMessageId() || bounced.GetReason() != "userunknown" || bounced.GetEnhancedCode() != "5.1.1" ||
		bounced.GetBounceClass() != mailwavev1.BounceClass_BOUNCE_CLASS_HARD || bounced.GetRecipient() != rcpt {
		t.Errorf("bounce event %v", bounced)
	}
	testenv.Eventually(t, 20*time.Second, func() bool { _, ok := e.suppression(t, "shop", rcpt); return ok }, "no suppression")
	if s, _ := e.suppression(t, "shop", rcpt); s.GetReason() != "hardbounce" || s.GetOrigin() != mailwavev1.Origin_ORIGIN_DSN {
		t.Errorf("suppression %v", s)
	}

	if _, err := e.cl.Send(ctx, templateRequest("dsn-unknown-2", "shop", rcpt)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cl.Send(ctx, templateRequest("dsn-unknown-3", "outlet", rcpt)); err != nil {
		t.Fatal(err)
	}
	if ev := e.terminal(t, "acme", "dsn-unknown-2", 1)[rcpt]; ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_SUPPRESSED {
		t.Errorf("next send for the brand ended %v (%s), want suppressed", ev.GetKind(), ev.GetReason())
	}
	if ev := e.terminal(t, "acme", "dsn-unknown-3", 1)[rcpt]; ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED {
		t.Errorf("a send for another brand ended %v, want delivered", ev.GetKind())
	}
	if n := len(e.sim.Ledger().Snapshot().To(rcpt)); n != 2 {
		t.Errorf("the provider received %d messages for %s, want 2 (none for the suppressed send)", n, rcpt)
	}
}

// smtpSend speaks SMTP to addr and returns the reply to RCPT TO and, when
// the recipient was taken, to the end of data.
func smtpSend(t *testing.T, addr, rcpt, body string) (rcptCode, dataCode int) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	tc := textproto.NewConn(conn)
	step := func(want int, cmd string) int {
		t.Helper()
		if cmd != "" {
			if err := tc.PrintfLine("%s", cmd); err != nil {
				t.Fatal(err)
			}
		}
		code, msg, err := tc.ReadResponse(0)
		if err != nil && code == 0 {
			t.Fatalf("%s: %v", cmd, err)
		}
		if want != 0 && code != want {
			t.Fatalf("%s: %d %s", cmd, code, msg)
		}
		return code
	}
	step(220, "")
	step(250, "EHLO mx.attacker.test")
	step(250, "MAIL FROM:<>")
	if rcptCode = step(0, "RCPT TO:<"+rcpt+">"); rcptCode != 250 {
		return rcptCode, 0
	}
	step(354, "DATA")
	w := tc.DotWriter()
	_, _ = io.WriteString(w, body)
	_ = w.Close()
	dataCode = step(0, "")
	_ = tc.PrintfLine("QUIT")
	return rcptCode, dataCode
}

func forgedDSN(rcpt, to, headerID string) string {
	return "From: MAILER-DAEMON@mx.attacker.test\r\nTo: <" + to + ">\r\nSubject: Undelivered Mail Returned to Sender\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\n<" + rcpt + ">: User unknown\r\n\r\n" +
		"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.attacker.test\r\n\r\n" +
		"Final-Recipient: rfc822; " + rcpt + "\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n" +
		"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: Shop <news@mailwave.test>\r\nTo: <" + rcpt + ">\r\nMessage-ID: <" + headerID + ">\r\n\r\n--b--\r\n"
}

// Bounces with a forged or missing VERP signature change no counter and
// no suppression: the forged return path is refused at RCPT TO, and a
// bounce to postmaster that only quotes our Message-ID is reported,
// never acted on. The address keeps receiving mail.
func TestForgedBouncesChangeNothing(t *testing.T) {
	e := start(t)
	ctx := testenv.Context(t)
	const rcpt = "cleo@gmail.com"
	if _, err := e.cl.Send(ctx, templateRequest("forged-1", "shop", rcpt)); err != nil {
		t.Fatal(err)
	}
	ev := e.terminal(t, "acme", "forged-1", 1)[rcpt]
	if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED {
		t.Fatalf("first send %v", ev.GetKind())
	}
	msg := e.sim.Ledger().Snapshot().To(rcpt)[0]
	headerID := strings.Trim(msg.MessageID, "<>")
	genuine := msg.MailFrom
	at := strings.LastIndexByte(genuine, '@')
	local := []byte(genuine[:at])
	// One character of the signature changed, to another of its alphabet.
	if local[len(local)-1] == 'a' {
		local[len(local)-1] = 'b'
	} else {
		local[len(local)-1] = 'a'
	}
	forged := string(local) + genuine[at:]

	for _, tc := range []struct{ name, to string }{
		{"forged signature", forged},
		{"no token", "bounce-" + ev.GetMessageId() + "@" + stack.DefaultBounceDomain},
	} {
		if code, _ := smtpSend(t, e.st.InboundDSN, tc.to, forgedDSN(rcpt, tc.to, headerID)); code != 550 {
			t.Errorf("%s: RCPT TO answered %d, want 550", tc.name, code)
		}
	}
	// Postmaster takes any mail; this one names our message only by its
	// Message-ID, which anyone who received it could copy.
	pm := "postmaster@" + stack.DefaultBounceDomain
	if rc, dc := smtpSend(t, e.st.InboundDSN, pm, forgedDSN(rcpt, pm, headerID)); rc != 250 || dc != 250 {
		t.Fatalf("postmaster: %d %d", rc, dc)
	}
	// Its report says it was not verified; by the time it is published,
	// anything the bounce could have changed would have been changed.
	st, err := e.js.Stream(ctx, mailwavev1.StreamReports)
	if err != nil {
		t.Fatal(err)
	}
	var rep mailwavev1.BounceReport
	testenv.Eventually(t, 20*time.Second, func() bool {
		raw, err := st.GetLastMsgForSubject(ctx, mailwavev1.SubjectBounceReport("acme"))
		return err == nil && proto.Unmarshal(raw.Data, &rep) == nil
	}, "the unverified bounce was not reported")
	if c := rep.GetCorrelation(); c.GetVerified() || c.GetMethod() != "message-id" || c.GetMessageId() != ev.GetMessageId() {
		t.Errorf("correlation %v", c)
	}
	rdb := e.redis(t)
	for _, class := range []string{"hard", "soft"} {
		if n, err := rdb.Exists(ctx, inbounddsn.CounterKey(class, "acme", "shop", rcpt)).Result(); err != nil || n != 0 {
			t.Errorf("%s counter exists (%v)", class, err)
		}
	}
	if s, ok := e.suppression(t, "shop", rcpt); ok {
		t.Errorf("suppressed: %v", s)
	}
	if _, err := e.cl.Send(ctx, templateRequest("forged-2", "shop", rcpt)); err != nil {
		t.Fatal(err)
	}
	if ev := e.terminal(t, "acme", "forged-2", 1)[rcpt]; ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED {
		t.Errorf("after forged bounces the next send ended %v, want delivered", ev.GetKind())
	}
}

// A DSN reporting a full mailbox after acceptance plans a new attempt
// within the message's max age, which is delivered once the mailbox has
// room: a new message, with its own id, return path and Message-ID, sent
// once.
func TestMailboxFullAfterAcceptanceIsRetried(t *testing.T) {
	thresholds := filepath.Join(t.TempDir(), "thresholds.yaml")
	if err := os.WriteFile(thresholds, []byte("retry: ['4', '5.2.2']\nretry_after: 1s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startWith(t, nil, func(o *stack.Options) {
		o.TuneInbound = func(c *inbounddsn.Config) { c.ThresholdsFile = thresholds }
	})
	ctx := testenv.Context(t)
	quickDSNs(t, e.sim, "google", true)
	const rcpt = "dsn-full-bo@gmail.com"
	if _, err := e.cl.Send(ctx, templateRequest("dsn-full-1", "shop", rcpt)); err != nil {
		t.Fatal(err)
	}
	first := e.waitEvent(t, "acme", "dsn-full-1", "delivered", kindOrigin(mailwavev1.EventKind_EVENT_KIND_DELIVERED, mailwavev1.Origin_ORIGIN_SMTP))
	// The mailbox is emptied as soon as the DSN is out.
	if _, err := e.sim.Ledger().Wait(ctx, func(s *ispsim.Snapshot) bool { return len(s.ReportsOf("dsn")) > 0 }); err != nil {
		t.Fatal(err)
	}
	quickDSNs(t, e.sim, "google", false)

	deferred := e.waitEvent(t, "acme", "dsn-full-1", "deferred by DSN", kindOrigin(mailwavev1.EventKind_EVENT_KIND_DEFERRED, mailwavev1.Origin_ORIGIN_DSN))
	if deferred.GetMessageId() != first.GetMessageId() || deferred.GetReason() != "mailboxfull" || deferred.GetNextAttemptAt() == nil {
		t.Errorf("deferred event %v", deferred)
	}
	retryID := planner.RetryID(first.GetMessageId())
	again := e.waitEvent(t, "acme", "dsn-full-1", "delivered again", func(ev *mailwavev1.DeliveryEvent) bool {
		return ev.GetKind() == mailwavev1.EventKind_EVENT_KIND_DELIVERED && ev.GetMessageId() == retryID
	})
	if again.GetRecipient() != rcpt || !again.GetOccurredAt().AsTime().After(deferred.GetNextAttemptAt().AsTime().Add(-time.Second)) {
		t.Errorf("second delivery %v", again)
	}

	snap := e.sim.Ledger().Snapshot()
	got := snap.To(rcpt)
	if len(got) != 2 {
		t.Fatalf("the provider received %d messages, want the first and one new attempt", len(got))
	}
	if got[0].MailFrom == got[1].MailFrom || got[0].MessageID == got[1].MessageID || got[1].Arrival != 1 {
		t.Errorf("the new attempt reuses the first one's return path or Message-ID: %q %q, %q %q",
			got[0].MailFrom, got[1].MailFrom, got[0].MessageID, got[1].MessageID)
	}
	if !strings.Contains(string(got[1].Data), "Hello Ana") {
		t.Errorf("new attempt content:\n%s", got[1].Data)
	}
	// It is remembered for a later bounce, with the first one's expiry.
	kv, err := e.js.KeyValue(ctx, mailwavev1.BucketMessages)
	if err != nil {
		t.Fatal(err)
	}
	records := map[string]*mailwavev1.MessageRecord{}
	for _, id := range []string{first.GetMessageId(), retryID} {
		entry, err := kv.Get(ctx, id)
		if err != nil {
			t.Fatalf("record %s: %v", id, err)
		}
		var rec mailwavev1.MessageRecord
		if err := proto.Unmarshal(entry.Value(), &rec); err != nil {
			t.Fatal(err)
		}
		records[id] = &rec
	}
	if r, o := records[retryID], records[first.GetMessageId()]; r.GetReturnPath() != got[1].MailFrom ||
		!r.GetExpiresAt().AsTime().Equal(o.GetExpiresAt().AsTime()) || r.GetRequestId() != o.GetRequestId() {
		t.Errorf("record of the new attempt %v", r)
	}
	// A full mailbox that was retried is not a bounce.
	if n, _ := e.redis(t).Exists(ctx, inbounddsn.CounterKey("soft", "acme", "shop", rcpt)).Result(); n != 0 {
		t.Error("the retried failure was counted as a soft bounce")
	}
}
