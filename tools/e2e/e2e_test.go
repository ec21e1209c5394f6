// Package e2e_test runs the whole platform in one process — a real NATS
// server, a real Redis, the five services and the ISP simulator over real
// SMTP and DNS on loopback — and checks what users rely on.
package e2e_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/mailwave/mailwave/pkg/client"
	"github.com/mailwave/mailwave/pkg/ispsim"
	"github.com/mailwave/mailwave/pkg/testenv"
	"github.com/mailwave/mailwave/pkg/verp"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/tools/stack"
)

type env struct {
	sim *ispsim.Sim
	st  *stack.Stack
	nc  *nats.Conn
	js  jetstream.JetStream
	cl  *client.Client
}

func start(t *testing.T) *env { return startWith(t, nil, nil) }

// startWith starts the simulator (on clock when not nil) and the stack,
// letting a test adjust the stack's options.
func startWith(t *testing.T, clock ispsim.Clock, tune func(*stack.Options)) *env {
	t.Helper()
	ctx := testenv.Context(t)
	prof, err := ispsim.DefaultProfile()
	if err != nil {
		t.Fatal(err)
	}
	var simOpts []ispsim.Option
	if clock != nil {
		simOpts = append(simOpts, ispsim.WithClock(clock))
	}
	sim, err := ispsim.Start(ctx, prof, simOpts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	logger := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	opts := stack.Options{
		DataDir:   t.TempDir(),
		RedisURL:  os.Getenv("MW_TEST_REDIS_URL"),
		DNSServer: sim.DNSAddr(),
		SMTPPort:  sim.SMTPPort(),
		SourceIPs: []string{"127.0.0.3"},
		HeloNames: []string{"mta2.mailwave.test"},
		Logger:    logger,
	}
	if tune != nil {
		tune(&opts)
	}
	st, err := stack.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	bounceDomain := opts.BounceDomain
	if bounceDomain == "" {
		bounceDomain = stack.DefaultBounceDomain
	}
	// DSNs the simulator sends to return paths reach inbound-dsn.
	if err := sim.SetRoute(bounceDomain, st.InboundDSN); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Stop(); err != nil {
			t.Errorf("stack stop: %v", err)
		}
	})
	nc := testenv.ConnectURL(t, st.NATSURL)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &env{sim: sim, st: st, nc: nc, js: js, cl: cl}
}

func rawMessage(to, id string) []byte {
	return []byte("From: Shop <news@mailwave.test>\r\n" +
		"To: <" + to + ">\r\n" +
		"Subject: Order confirmation\r\n" +
		"Message-ID: <" + id + "@mailwave.test>\r\n" +
		"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"\r\n" +
		"Thank you for your order.\r\n" +
		".leading dot line survives dot-stuffing\r\n")
}

// terminal waits for the terminal event of each recipient of a request.
func (e *env) terminal(t *testing.T, tenant, requestID string, want int) map[string]*mailwavev1.DeliveryEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(testenv.Context(t), 60*time.Second)
	defer cancel()
	out := map[string]*mailwavev1.DeliveryEvent{}
	for ev, err := range e.cl.Events(ctx, tenant, requestID, time.Now().Add(-time.Hour)) {
		if err != nil {
			t.Fatalf("events: %v", err)
		}
		if client.IsTerminal(ev.GetKind()) {
			if prev, dup := out[ev.GetRecipient()]; dup {
				t.Fatalf("second terminal event for %s: %v after %v", ev.GetRecipient(), ev.GetKind(), prev.GetKind())
			}
			out[ev.GetRecipient()] = ev
			if len(out) == want {
				return out
			}
		}
	}
	kinds := map[mailwavev1.EventKind]int{}
	for _, ev := range out {
		kinds[ev.GetKind()]++
	}
	t.Fatalf("timed out with %d of %d terminal events: %v", len(out), want, kinds)
	return nil
}

func TestSendEndToEnd(t *testing.T) {
	e := start(t)
	ctx := testenv.Context(t)
	const rcpt = "ana@gmail.com"
	raw := rawMessage(rcpt, "e2e-1")
	req := &mailwavev1.SendRequest{
		IdempotencyKey: "e2e-order-1", Tenant: "acme", Brand: "shop", MailStream: "transactional",
		Priority:   mailwavev1.Priority_PRIORITY_TRANSACTIONAL,
		Recipients: []*mailwavev1.Recipient{{Address: rcpt, ExternalId: "cust-42"}},
		Content:    &mailwavev1.SendRequest_Raw{Raw: raw},
		Metadata:   map[string]string{"order": "1"},
	}
	r1, err := e.cl.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	// The same request again, same idempotency key: stored once, sent once.
	r2, err := e.cl.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Duplicate || !r2.Duplicate || r1.Sequence != r2.Sequence {
		t.Fatalf("receipts %+v %+v: the second send must be a duplicate", r1, r2)
	}

	evs := e.terminal(t, "acme", "e2e-order-1", 1)
	ev := evs[rcpt]
	if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED {
		t.Fatalf("terminal event %v: %s %s", ev.GetKind(), ev.GetResponse(), ev.GetReason())
	}
	if ev.GetSmtpCode() != 250 || ev.GetSourceIp() != "127.0.0.3" || ev.GetProvider() != "google" ||
		ev.GetExternalId() != "cust-42" || ev.GetMetadata()["order"] != "1" || ev.GetTenant() != "acme" {
		t.Errorf("delivered event %v", ev)
	}

	// The simulator received exactly the published bytes, once, from the
	// configured source IP and EHLO name, over the return path we signed.
	snap, err := e.sim.Ledger().Wait(ctx, func(s *ispsim.Snapshot) bool {
		return len(s.MessagesWithID("e2e-1@mailwave.test")) > 0
	})
	if err != nil {
		t.Fatal(err)
	}
	copies := snap.MessagesWithID("e2e-1@mailwave.test")
	if len(copies) != 1 {
		t.Fatalf("the simulator received %d copies, want exactly 1", len(copies))
	}
	entry := copies[0]
	if !bytes.Equal(entry.Data, raw) {
		t.Errorf("received bytes differ from the published ones:\n got %q\nwant %q", entry.Data, raw)
	}
	if entry.SourceIP.String() != "127.0.0.3" || entry.EHLO != "mta2.mailwave.test" || entry.Provider != "google" {
		t.Errorf("source %s helo %s provider %s", entry.SourceIP, entry.EHLO, entry.Provider)
	}
	if len(entry.Rcpts) != 1 || entry.Rcpts[0] != rcpt {
		t.Errorf("envelope to %v", entry.Rcpts)
	}
	// The planner remembered the message for later bounces and complaints.
	kv, err := e.js.KeyValue(ctx, mailwavev1.BucketMessages)
	if err != nil {
		t.Fatal(err)
	}
	kve, err := kv.Get(ctx, ev.GetMessageId())
	if err != nil {
		t.Fatalf("message record: %v", err)
	}
	var rec mailwavev1.MessageRecord
	if err := proto.Unmarshal(kve.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.GetTenant() != "acme" || rec.GetRecipient() != rcpt || rec.GetSourceIp() != "127.0.0.3" ||
		rec.GetReturnPath() != entry.MailFrom || rec.GetSendSequence() != r1.Sequence || rec.GetHeaderMessageId() != "e2e-1@mailwave.test" {
		t.Errorf("message record %v", &rec)
	}
	signer, err := verp.NewSigner([]byte(e.st.VERPKey))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := signer.Verify(entry.MailFrom, rcpt)
	if err != nil || tok.MessageID != ev.GetMessageId() || tok.BounceDomain != "bounces.mailwave.test" {
		t.Errorf("return path %q: token %+v, %v; want message %s", entry.MailFrom, tok, err, ev.GetMessageId())
	}
}

func TestMalformedPayloadIsDeadLettered(t *testing.T) {
	e := start(t)
	ctx := testenv.Context(t)
	bad := nats.NewMsg(mailwavev1.SubjectSend(mailwavev1.LaneBulk, "acme"))
	bad.Data = []byte("this is not a protobuf message \xff\xff")
	if _, err := e.js.PublishMsg(ctx, bad); err != nil {
		t.Fatal(err)
	}
	var dead *jetstream.RawStreamMsg
	testenv.Eventually(t, 15*time.Second, func() bool {
		st, err := e.js.Stream(ctx, mailwavev1.StreamDead)
		if err != nil {
			return false
		}
		dead, err = st.GetLastMsgForSubject(ctx, mailwavev1.SubjectDead(mailwavev1.StreamSend))
		return err == nil
	}, "nothing on the dead-letter subject")
	if dead.Header.Get(mailwavev1.HeaderDeadReason) == "" || !bytes.Equal(dead.Data, bad.Data) {
		t.Fatalf("dead letter %q headers %v", dead.Data, dead.Header)
	}
	// The planner keeps running: a good request after it is delivered.
	req := &mailwavev1.SendRequest{
		IdempotencyKey: "after-bad", Tenant: "acme", Brand: "shop",
		Recipients: []*mailwavev1.Recipient{{Address: "bo@yahoo.com"}},
		Content: &mailwavev1.SendRequest_Template{Template: &mailwavev1.Template{
			From: "Shop <news@mailwave.test>", Subject: "Hello {{.name}}", Text: "Hi {{.name}}",
		}},
	}
	req.Recipients[0].Vars = map[string]string{"name": "Bo"}
	if _, err := e.cl.Send(ctx, req); err != nil {
		t.Fatal(err)
	}
	evs := e.terminal(t, "acme", "after-bad", 1)
	if k := evs["bo@yahoo.com"].GetKind(); k != mailwavev1.EventKind_EVENT_KIND_DELIVERED {
		t.Fatalf("after the bad payload: %v %s", k, evs["bo@yahoo.com"].GetResponse())
	}
}

func TestSuppressedRecipientIsNeverSent(t *testing.T) {
	e := start(t)
	ctx := testenv.Context(t)
	kv, err := e.js.KeyValue(ctx, mailwavev1.BucketSuppressions)
	if err != nil {
		t.Fatal(err)
	}
	put := func(scope mailwavev1.SuppressionScope, ct, addr, reason string) {
		b, err := proto.Marshal(&mailwavev1.Suppression{Address: addr, Tenant: "acme", Brand: "shop", Scope: scope,
			CommunicationType: ct, Reason: reason, Origin: mailwavev1.Origin_ORIGIN_USER})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, mailwavev1.SuppressionKey(scope, "acme", "shop", ct, addr), b); err != nil {
			t.Fatal(err)
		}
	}
	put(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND, "", "gone@gmail.com", "complaint")
	put(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_COMMUNICATION_TYPE, "digest", "bored@yahoo.com", "unsubscribe")
	req := &mailwavev1.SendRequest{
		IdempotencyKey: "supp-1", Tenant: "acme", Brand: "shop", CommunicationType: "digest",
		Recipients: []*mailwavev1.Recipient{{Address: "Gone@gmail.com"}, {Address: "bored@yahoo.com"}, {Address: "keen@gmail.com"}},
		Content: &mailwavev1.SendRequest_Template{Template: &mailwavev1.Template{
			From: "Shop <news@mailwave.test>", Subject: "Digest", Text: "news"}},
	}
	if _, err := e.cl.Send(ctx, req); err != nil {
		t.Fatal(err)
	}
	evs := e.terminal(t, "acme", "supp-1", 3)
	for rcpt, want := range map[string]string{"Gone@gmail.com": "complaint", "bored@yahoo.com": "unsubscribe"} {
		ev := evs[rcpt]
		if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_SUPPRESSED || ev.GetReason() != want {
			t.Errorf("%s: %v %q, want suppressed %q", rcpt, ev.GetKind(), ev.GetReason(), want)
		}
	}
	if k := evs["keen@gmail.com"].GetKind(); k != mailwavev1.EventKind_EVENT_KIND_DELIVERED {
		t.Errorf("keen@gmail.com: %v", k)
	}
	snap := e.sim.Ledger().Snapshot()
	if n := len(snap.To("gone@gmail.com")) + len(snap.To("Gone@gmail.com")) + len(snap.To("bored@yahoo.com")); n != 0 {
		t.Errorf("suppressed recipients reached the simulator %d times", n)
	}
}
