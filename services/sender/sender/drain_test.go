package sender_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/ispsim"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/sender/sender"
)

// TestDrainOnSIGTERM is what a scale-down or a rollout does to a sender
// pod: SIGTERM cancels the context (main's signal.NotifyContext) while
// messages are in SMTP sessions with a slow provider. The sender must stop
// fetching, finish the transactions it started, hand back what it fetched
// but had not started, and return within MW_DRAIN_TIMEOUT. Every message
// then is either delivered (and acknowledged, so gone from the work
// queue) or back in DISPATCH, never both, never neither; the replacement
// pod delivers the rest, and no recipient gets a message twice.
func TestDrainOnSIGTERM(t *testing.T) {
	ctx := testenv.Context(t)
	ns := testenv.NATS(t)
	_, js := testenv.JetStream(t, ns)
	_, redisURL := testenv.Redis(t)
	prof, err := ispsim.DefaultProfile()
	if err != nil {
		t.Fatal(err)
	}
	sim, err := ispsim.Start(ctx, prof)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	// Yahoo greets only after a second: a sender that connects to it has
	// a message in flight, not yet delivered, for that long.
	const greeting = time.Second
	sim.Provider("yahoo").SetSlow(ispsim.SlowConfig{Greeting: greeting})

	// The drain is about sessions, not shaping: the shipped limits would
	// make workers wait for tokens instead of talking SMTP.
	shaping := filepath.Join(t.TempDir(), "shaping.yaml")
	limits := "{max_connections: 50, messages_per_second: 1000, messages_per_minute: 60000, messages_per_hour: 1000000, connections_per_minute: 1000}"
	if err := os.WriteFile(shaping, []byte("providers:\n  google: "+limits+"\n  yahoo: "+limits+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const drainTimeout = 20 * time.Second
	env := map[string]string{
		"NATS_URL": ns.ClientURL(), "REDIS_URL": redisURL, "MW_HTTP_ADDR": "127.0.0.1:0",
		"MW_DNS_SERVER": sim.DNSAddr(), "MW_SMTP_PORT": strconv.Itoa(sim.SMTPPort()),
		"MW_HELO_NAME": "mta.mailwave.test", "MW_SENDER_WORKERS": "4", "MW_SHAPING_FILE": shaping,
		"MW_DRAIN_TIMEOUT": drainTimeout.String(),
	}
	var cfg sender.Config
	if err := service.LoadConfig("sender", nil, func(k string) string { return env[k] }, &cfg); err != nil {
		t.Fatal(err)
	}
	start := func() (cancel func(), done <-chan error) {
		runCtx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		started := make(chan struct{})
		go func() {
			errc <- sender.Run(runCtx, cfg, slog.New(slog.DiscardHandler), service.Options{OnStart: func(*service.Runtime) { close(started) }})
		}()
		select {
		case <-started:
		case err := <-errc:
			t.Fatalf("sender did not start: %v", err)
		}
		return cancel, errc
	}

	// Four messages for Yahoo first, so the four workers take them, then
	// twenty for Gmail, fetched ahead but not started at SIGTERM.
	const n, slow = 24, 4
	pub := events.NewPublisher(js)
	ids := map[string]string{} // message id → recipient
	for i := range n {
		domain, site := "gmail.com", "google"
		if i < slow {
			domain, site = "yahoo.com", "yahoo"
		}
		id, rcpt := fmt.Sprintf("drain-%02d", i), fmt.Sprintf("drain%02d@%s", i, domain)
		ids[id] = rcpt
		d := &mailwavev1.DispatchMessage{
			MessageId: id, RequestId: "drain", Tenant: "acme", Recipient: rcpt,
			ReturnPath: "bounce-" + id + "@bounces.mailwave.test", Attempt: 1,
			Routing:   &mailwavev1.Routing{Pool: "default", RecipientDomain: domain, SendingDomain: "mailwave.test"},
			ExpiresAt: timestamppb.New(time.Now().Add(time.Hour)),
			Data: []byte("From: Shop <news@mailwave.test>\r\nTo: <" + rcpt + ">\r\nSubject: drain\r\n" +
				"Message-ID: <" + id + "@mailwave.test>\r\n\r\nhello\r\n"),
		}
		if _, err := pub.Publish(ctx, mailwavev1.SubjectDispatch("default", site), d, events.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}

	delivered := func(s *ispsim.Snapshot) map[string]int {
		out := map[string]int{}
		for id, rcpt := range ids {
			if c := s.Delivered(id+"@mailwave.test", rcpt); c > 0 {
				out[id] = c
			}
		}
		return out
	}
	yahooActive := func(s *ispsim.Snapshot) int {
		active := 0
		for _, c := range s.Counters {
			if c.Provider == "yahoo" {
				active += c.Active
			}
		}
		return active
	}
	cancel, done := start()
	// SIGTERM while a Yahoo session waits for its greeting: that message
	// is in the middle of its delivery.
	snap, err := sim.Ledger().Wait(ctx, func(s *ispsim.Snapshot) bool { return yahooActive(s) > 0 })
	if err != nil {
		t.Fatal(err)
	}
	sigterm := time.Now()
	cancel()
	atSIGTERM := len(delivered(snap))
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("drain: %v", err)
		}
	case <-time.After(drainTimeout + 10*time.Second):
		t.Fatal("the sender did not return after its drain timeout")
	}
	drained := time.Since(sigterm)

	// Delivered (and acknowledged) or back in the work queue, exactly one
	// of the two for every message.
	afterDrain := delivered(sim.Ledger().Snapshot())
	waiting := dispatchWaiting(ctx, t, js)
	for id := range ids {
		_, sent := afterDrain[id]
		_, queued := waiting[id]
		switch {
		case sent && queued:
			t.Errorf("%s was delivered and is still in DISPATCH: it was not acknowledged", id)
		case !sent && !queued:
			t.Errorf("%s was lost: neither delivered nor in DISPATCH", id)
		}
	}
	if atSIGTERM > 0 {
		t.Fatalf("%d messages were delivered before SIGTERM; the Yahoo greeting should hold the first ones", atSIGTERM)
	}
	// The sessions SIGTERM found waiting were finished, not abandoned.
	finished := 0
	for id := range afterDrain {
		if id < fmt.Sprintf("drain-%02d", slow) {
			finished++
		}
	}
	if finished == 0 {
		t.Errorf("no Yahoo message in flight at SIGTERM was delivered by the drain (delivered: %v)", slices.Sorted(maps.Keys(afterDrain)))
	}
	if len(waiting) == 0 {
		t.Errorf("nothing went back to DISPATCH: the sender did not stop fetching")
	}
	t.Logf("drained in %s: %d delivered (%d held by Yahoo's slow greeting at SIGTERM), %d back in DISPATCH",
		drained.Round(time.Millisecond), len(afterDrain), finished, len(waiting))

	// The replacement pod delivers the rest at once: what went back was
	// handed back (NAK), not left to the consumer's ack wait (2 minutes).
	// Nobody gets a second copy.
	cancel, done = start()
	waitCtx, stopWait := context.WithTimeout(ctx, time.Minute)
	defer stopWait()
	snap, err = sim.Ledger().Wait(waitCtx, func(s *ispsim.Snapshot) bool { return len(delivered(s)) == n })
	if err != nil {
		t.Fatalf("the replacement sender delivered %d of %d within a minute: %v", len(delivered(sim.Ledger().Snapshot())), n, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("second sender: %v", err)
	}
	for id, copies := range delivered(snap) {
		if copies != 1 {
			t.Errorf("%s was delivered %d times", id, copies)
		}
	}
	if dups := sim.Ledger().Snapshot().Duplicates(); len(dups) > 0 {
		t.Errorf("duplicates at the provider: %v", dups)
	}
	if left := dispatchWaiting(ctx, t, js); len(left) > 0 {
		t.Errorf("still in DISPATCH after every delivery: %v", slices.Sorted(maps.Keys(left)))
	}
	st, err := js.Stream(ctx, mailwavev1.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(mailwavev1.SubjectEvent(mailwavev1.EventKind_EVENT_KIND_DELIVERED, "acme")))
	if err != nil {
		t.Fatal(err)
	}
	if got := info.State.Msgs; got != n {
		t.Errorf("%d delivered events, want one per message (%d)", got, n)
	}
}

// dispatchWaiting returns the message ids of the dispatch messages DISPATCH
// holds (a work queue: acknowledged messages are gone).
func dispatchWaiting(ctx context.Context, t *testing.T, js jetstream.JetStream) map[string]bool {
	t.Helper()
	st, err := js.Stream(ctx, mailwavev1.StreamDispatch)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	if info.State.Msgs == 0 {
		return out
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue // acknowledged and removed
		}
		var d mailwavev1.DispatchMessage
		if err := proto.Unmarshal(m.Data, &d); err != nil {
			t.Fatalf("DISPATCH seq %d: %v", seq, err)
		}
		out[d.GetMessageId()] = true
	}
	return out
}
