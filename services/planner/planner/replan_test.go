package planner_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/client"
	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/mx"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/testenv"
	"github.com/mailwave/mailwave/pkg/verp"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/planner/planner"
)

const verpKey = "planner-replan-test-key-0123456789"

type replanEnv struct {
	js   jetstream.JetStream
	cl   *client.Client
	pub  *events.Publisher
	http string
}

// startPlanner runs the planner alone (no sender: dispatches stay in the
// stream, where the test reads them).
func startPlanner(t *testing.T) *replanEnv {
	t.Helper()
	ns := testenv.NATS(t)
	nc, js := testenv.JetStream(t, ns)
	_, redisURL := testenv.Redis(t)
	cfg := baseConfig(ns.ClientURL(), redisURL)
	cfg.VERPKeys = []string{verpKey}
	cfg.SourceIPs = []string{"192.0.2.1", "192.0.2.2"}
	cfg.HeloNames = []string{"mta1.shop.test", "mta2.shop.test"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- planner.Run(ctx, cfg, slog.New(slog.DiscardHandler), service.Options{OnListen: func(a net.Addr) { addr <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("planner: %v", err)
		}
	})
	e := &replanEnv{js: js, pub: events.NewPublisher(js)}
	select {
	case a := <-addr:
		e.http = a.String()
	case err := <-done:
		t.Fatalf("planner stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("planner did not start")
	}
	var err error
	if e.cl, err = client.New(nc); err != nil {
		t.Fatal(err)
	}
	return e
}

// plan sends a request for rcpt and returns the record of its message.
func (e *replanEnv) plan(t *testing.T, key, rcpt string) *mailwavev1.MessageRecord {
	t.Helper()
	ctx := testenv.Context(t)
	_, err := e.cl.Send(ctx, &mailwavev1.SendRequest{
		IdempotencyKey: key, Tenant: "acme", Brand: "shop", MailStream: "newsletter",
		Metadata:   map[string]string{"order": "7"},
		Recipients: []*mailwavev1.Recipient{{Address: rcpt, ExternalId: "cust-7", Vars: map[string]string{"name": "Ana"}}},
		Content: &mailwavev1.SendRequest_Template{Template: &mailwavev1.Template{
			From: "Shop <news@shop.test>", Subject: "Offers for {{.name}}", Text: "Hello {{.name}}"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var rec *mailwavev1.MessageRecord
	testenv.Eventually(t, 20*time.Second, func() bool { rec = e.record(t, planner.MessageID(key, rcpt)); return rec != nil }, "not planned")
	return rec
}

func (e *replanEnv) record(t *testing.T, id string) *mailwavev1.MessageRecord {
	t.Helper()
	ctx := testenv.Context(t)
	kv, err := e.js.KeyValue(ctx, mailwavev1.BucketMessages)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var rec mailwavev1.MessageRecord
	if err := proto.Unmarshal(entry.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	return &rec
}

// deferred publishes what inbound-dsn publishes for a full mailbox
// reported after acceptance.
func (e *replanEnv) deferred(t *testing.T, rec *mailwavev1.MessageRecord, inboundID string, next time.Time) {
	t.Helper()
	ev := &mailwavev1.DeliveryEvent{
		EventId: events.NewID(), Kind: mailwavev1.EventKind_EVENT_KIND_DEFERRED, Origin: mailwavev1.Origin_ORIGIN_DSN,
		MessageId: rec.GetMessageId(), RequestId: rec.GetRequestId(), Tenant: "acme", Brand: "shop", Recipient: rec.GetRecipient(),
		SmtpCode: 552, EnhancedCode: "5.2.2", Reason: "mailboxfull", Response: "552 5.2.2 Mailbox full",
		NextAttemptAt: timestamppb.New(next), OccurredAt: timestamppb.Now(),
	}
	if _, err := e.pub.Publish(testenv.Context(t), mailwavev1.SubjectEvent(ev.Kind, "acme"), ev, events.WithMsgID(inboundID+":deferred")); err != nil {
		t.Fatal(err)
	}
}

// dispatches returns the messages waiting on a dispatch subject.
func (e *replanEnv) dispatches(t *testing.T, subject string) []*mailwavev1.DispatchMessage {
	t.Helper()
	ctx := testenv.Context(t)
	st, err := e.js.Stream(ctx, mailwavev1.StreamDispatch)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*mailwavev1.DispatchMessage
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		raw, err := st.GetMsg(ctx, seq)
		if err != nil || raw.Subject != subject {
			continue
		}
		var d mailwavev1.DispatchMessage
		if err := proto.Unmarshal(raw.Data, &d); err != nil {
			t.Fatal(err)
		}
		out = append(out, &d)
	}
	return out
}

func (e *replanEnv) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + e.http + "/metrics")
	if err != nil {
		t.Fatal(err)
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
	return 0
}

func (e *replanEnv) lastEvent(t *testing.T, kind mailwavev1.EventKind) *mailwavev1.DeliveryEvent {
	t.Helper()
	ctx := testenv.Context(t)
	st, err := e.js.Stream(ctx, mailwavev1.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.GetLastMsgForSubject(ctx, mailwavev1.SubjectEvent(kind, "acme"))
	if err != nil {
		return nil
	}
	var ev mailwavev1.DeliveryEvent
	if err := proto.Unmarshal(raw.Data, &ev); err != nil {
		t.Fatal(err)
	}
	return &ev
}

// A DSN's deferral plans the recipient again: a new message, rendered
// from the send request, with its own id, return path and record, the
// first message's expiry and routing, scheduled for next_attempt_at.
// Planning the same deferral again changes nothing.
func TestDeferredByDSNIsPlannedAgain(t *testing.T) {
	e := startPlanner(t)
	const rcpt = "ana@receiver.test"
	first := e.plan(t, "replan-1", rcpt)
	// The dispatch subject names the site of the first message's provider.
	subject := mailwavev1.SubjectDispatch("default", mx.Token(first.GetSite()))
	next := time.Now().Add(time.Second)
	e.deferred(t, first, "inbound-1", next)

	retryID := planner.RetryID(first.GetMessageId())
	var d *mailwavev1.DispatchMessage
	testenv.Eventually(t, 20*time.Second, func() bool {
		for _, m := range e.dispatches(t, subject) {
			if m.GetMessageId() == retryID {
				d = m
			}
		}
		return d != nil
	}, "the new attempt never reached the dispatch subject")
	if time.Now().Before(next) {
		t.Errorf("the new attempt was dispatched before next_attempt_at")
	}
	signer, _ := verp.NewSigner([]byte(verpKey))
	if tok, err := signer.Verify(d.GetReturnPath(), rcpt); err != nil || tok.MessageID != retryID {
		t.Errorf("return path %q: %+v %v", d.GetReturnPath(), tok, err)
	}
	if d.GetRetryOf() != first.GetMessageId() || d.GetRequestId() != "replan-1" || d.GetRecipient() != rcpt ||
		!d.GetExpiresAt().AsTime().Equal(first.GetExpiresAt().AsTime()) || d.GetLastReason() != "mailboxfull" ||
		d.GetHeaderMessageId() != retryID+"@shop.test" || d.GetMetadata()["order"] != "7" || d.GetMetadata()["external_id"] != "cust-7" {
		t.Errorf("dispatch %v", d)
	}
	if r := d.GetRouting(); r.GetSourceIp() != first.GetSourceIp() || r.GetHeloName() == "" || len(r.GetFallbackSources()) != 1 ||
		r.GetSendingDomain() != "shop.test" {
		t.Errorf("routing %v", r)
	}
	if !strings.Contains(string(d.GetData()), "Message-ID: <"+retryID+"@shop.test>") || !strings.Contains(string(d.GetData()), "Hello Ana") {
		t.Errorf("data:\n%s", d.GetData())
	}
	rec := e.record(t, retryID)
	if rec == nil || rec.GetReturnPath() != d.GetReturnPath() || rec.GetSendSequence() != first.GetSendSequence() ||
		!rec.GetExpiresAt().AsTime().Equal(first.GetExpiresAt().AsTime()) {
		t.Errorf("record of the new attempt %v", rec)
	}

	// The same deferral again (a redelivery, a second DSN for the same
	// message): the same dispatch, stored once.
	e.deferred(t, first, "inbound-2", next)
	testenv.Eventually(t, 20*time.Second, func() bool {
		return e.metric(t, `mailwave_planner_dsn_retries_total{outcome="scheduled"}`) == 2
	}, "second deferral not handled")
	n := 0
	for _, m := range e.dispatches(t, subject) {
		if m.GetMessageId() == retryID {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d dispatches of the new attempt, want 1", n)
	}
}

// A recipient suppressed since is not mailed again; a message that cannot
// be planned again ends dropped with the reason. Deferrals the sender
// publishes (its own retries) are not the planner's business.
func TestDeferredByDSNSuppressedOrDropped(t *testing.T) {
	e := startPlanner(t)
	ctx := testenv.Context(t)
	const rcpt = "bo@receiver.test"
	first := e.plan(t, "replan-2", rcpt)
	kv, err := e.js.KeyValue(ctx, mailwavev1.BucketSuppressions)
	if err != nil {
		t.Fatal(err)
	}
	sup, _ := proto.Marshal(&mailwavev1.Suppression{Address: rcpt, Tenant: "acme", Brand: "shop", Reason: "complaint",
		Scope: mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND})
	if _, err := kv.Put(ctx, mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND, "acme", "shop", "", rcpt), sup); err != nil {
		t.Fatal(err)
	}
	e.deferred(t, first, "inbound-3", time.Now().Add(time.Second))
	var ev *mailwavev1.DeliveryEvent
	testenv.Eventually(t, 20*time.Second, func() bool {
		ev = e.lastEvent(t, mailwavev1.EventKind_EVENT_KIND_SUPPRESSED)
		return ev != nil
	}, "no suppressed event")
	if ev.GetMessageId() != planner.RetryID(first.GetMessageId()) || ev.GetReason() != "complaint" || ev.GetMetadata()["retry_of"] != first.GetMessageId() {
		t.Errorf("suppressed event %v", ev)
	}

	// The sender's own deferral is ignored...
	smtpDeferral := &mailwavev1.DeliveryEvent{EventId: events.NewID(), Kind: mailwavev1.EventKind_EVENT_KIND_DEFERRED,
		Origin: mailwavev1.Origin_ORIGIN_SMTP, MessageId: "0123456789abcdef0123456789abcdef", Tenant: "acme",
		NextAttemptAt: timestamppb.New(time.Now().Add(time.Minute))}
	if _, err := e.pub.Publish(ctx, mailwavev1.SubjectEvent(smtpDeferral.Kind, "acme"), smtpDeferral); err != nil {
		t.Fatal(err)
	}
	// ...and a DSN's deferral for a message nobody remembers ends dropped.
	unknown := &mailwavev1.MessageRecord{MessageId: "fedcba9876543210fedcba9876543210", RequestId: "gone", Recipient: "cy@receiver.test"}
	e.deferred(t, unknown, "inbound-4", time.Now().Add(time.Second))
	testenv.Eventually(t, 20*time.Second, func() bool {
		ev = e.lastEvent(t, mailwavev1.EventKind_EVENT_KIND_DROPPED)
		return ev != nil
	}, "no dropped event")
	if ev.GetMessageId() != planner.RetryID(unknown.GetMessageId()) || ev.GetReason() != "mailboxfull" ||
		!strings.Contains(ev.GetDetail(), "message record is gone") {
		t.Errorf("dropped event %v", ev)
	}
	// The counter moves once the event is out: wait for it, then check
	// it stays at one.
	testenv.Eventually(t, 10*time.Second, func() bool {
		return e.metric(t, `mailwave_planner_dsn_retries_total{outcome="dropped"}`) >= 1
	}, "the drop was not counted")
	if v := e.metric(t, `mailwave_planner_dsn_retries_total{outcome="dropped"}`); v != 1 {
		t.Errorf("dropped %v, want 1 (the sender's deferral is not dropped)", v)
	}
}
