package e2e_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/ispsim"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/sender/sender"
	"github.com/mailwave/mailwave/tools/stack"
)

// shapingFile writes a shaping policy for a test and returns its path.
func shapingFile(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "shaping.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// arrivals returns the times a provider accepted messages from ip, in order.
func arrivals(s *ispsim.Snapshot, provider string, ip string) []time.Time {
	var out []time.Time
	for _, m := range s.Accepted(provider, mustAddr(ip)) {
		out = append(out, m.ReceivedAt)
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// maxIn is the largest number of times within any window of length w.
func maxIn(times []time.Time, w time.Duration) int {
	best, lo := 0, 0
	for hi := range times {
		for times[hi].Sub(times[lo]) >= w {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

var waitedForConnGoogle = regexp.MustCompile(`mailwave_sender_shaped_total\{limit="connections",provider="google",source_ip="127\.0\.0\.3"\} (\d+)`)

var shapedGoogle = regexp.MustCompile(`mailwave_sender_shaped_total\{limit="rate",provider="google",source_ip="127\.0\.0\.3"\} (\d+)`)

var deliveredGoogle = regexp.MustCompile(`mailwave_sender_attempts_total\{outcome="delivered",provider="google",source_ip="127\.0\.0\.3"\} (\d+)`)

// Three sender replicas share one per-IP budget through Redis: together
// they deliver to the Gmail-like provider at its rate of 10 a second and
// not faster, as the provider's own ledger measures it.
func TestReplicasTogetherKeepAProvidersRate(t *testing.T) {
	const rate, burst, n = 10.0, 10, 130 // about 12 seconds of sending
	policy := shapingFile(t, `providers:
  google: {max_connections: 6, max_messages_per_connection: 1000, messages_per_second: 10,
           messages_per_minute: 0, messages_per_hour: 0, connections_per_minute: 600}
`)
	e := startWith(t, nil, func(o *stack.Options) {
		o.SenderReplicas = 3
		o.TuneSender = func(c *sender.Config) { c.ShapingFile = policy }
	})
	ctx := testenv.Context(t)
	rcpts := make([]string, n)
	for i := range rcpts {
		rcpts[i] = fmt.Sprintf("rate%d@gmail.com", i)
	}
	if _, err := e.cl.Send(ctx, &mailwavev1.SendRequest{IdempotencyKey: "rate-1", Tenant: "acme", Brand: "shop",
		Recipients: recipients(rcpts...), Content: template("Shop <news@mailwave.test>")}); err != nil {
		t.Fatal(err)
	}
	snap, err := e.sim.Ledger().Wait(ctx, func(s *ispsim.Snapshot) bool { return len(s.Messages) >= n })
	if err != nil {
		t.Fatal(err)
	}
	times := arrivals(snap, "google", "127.0.0.3")
	if len(times) != n {
		t.Fatalf("%d messages at the provider, want %d", len(times), n)
	}
	// The policy allows a burst of 10, then 10 a second: in any window of
	// w, at most burst + rate·w. The replicas together keep to it within
	// 5 %, in every 5-second window and over the whole run.
	const w = 5 * time.Second
	if got, limit := maxIn(times, w), burst+int(math.Ceil(1.05*rate*w.Seconds())); got > limit {
		t.Errorf("%d messages within %s, more than %d (a burst of %d + %g/s + 5%%)", got, w, limit, burst, rate)
	}
	span := times[n-1].Sub(times[0]).Seconds()
	measured := float64(n-burst) / span
	t.Logf("%d messages in %.1fs: %.2f/s after the burst of %d (limit %g/s); peak %d in %s",
		n, span, measured, burst, rate, maxIn(times, w), w)
	if measured > 1.05*rate {
		t.Errorf("sustained %.2f messages/s, more than %g/s + 5%%", measured, rate)
	}
	// The limit, not the machine, held them back: the replicas asked for
	// more than it allowed and were told to wait. (How fast they go below
	// the limit depends on the machine's load, so it is not asserted.)
	shaped := 0.0
	for _, svc := range []string{"sender", "sender-2", "sender-3"} {
		shaped += e.metric(t, svc, shapedGoogle)
	}
	if shaped == 0 {
		t.Errorf("no replica ever waited for the limit (%.2f messages/s): the test did not exercise it", measured)
	}
	// Waiting messages reserve their slots: each is told to wait for the
	// rate once or twice, not at every free slot (a stampede asked ~150
	// times each).
	if shaped > 3*n {
		t.Errorf("%g waits for %d messages: the backlog stampedes instead of taking its turns", shaped, n)
	}
	if rs := snap.RejectionsFor("google", mustAddr("127.0.0.3"), ""); len(rs) != 0 {
		t.Errorf("the provider refused %d messages (%s)", len(rs), rs[0].Reason)
	}
	// Every replica competed for the one budget (how the deliveries split
	// among them depends on the machine's load, so it is only logged).
	for _, svc := range []string{"sender", "sender-2", "sender-3"} {
		delivered, waited, conns := e.metric(t, svc, deliveredGoogle), e.metric(t, svc, shapedGoogle), e.metric(t, svc, waitedForConnGoogle)
		t.Logf("%s: %g delivered, %g waits for the rate, %g for a connection", svc, delivered, waited, conns)
		if delivered+waited+conns == 0 {
			t.Errorf("%s never took a message: the test did not exercise three replicas", svc)
		}
		// A replica that waits for a connection gets one: the others end
		// an idle session for it, so no replica keeps every slot.
		if delivered == 0 {
			t.Errorf("%s delivered nothing: another replica kept every connection slot", svc)
		}
	}
}

// A provider held to one message a second does not hold up another that
// may go at full speed: Yahoo's batch is done while Gmail's still
// trickles, in the same request and on the same sender.
func TestThrottledProviderDoesNotBlockOthers(t *testing.T) {
	policy := shapingFile(t, `providers:
  google: {max_connections: 2, messages_per_second: 1, messages_per_minute: 0, messages_per_hour: 0}
  yahoo: {max_connections: 10, max_messages_per_connection: 20, messages_per_second: 500,
          messages_per_minute: 0, messages_per_hour: 0, connections_per_minute: 600}
`)
	e := startWith(t, nil, func(o *stack.Options) {
		o.TuneSender = func(c *sender.Config) { c.ShapingFile = policy }
	})
	ctx := testenv.Context(t)
	const gmail, yahoo = 8, 40
	var rcpts []string
	for i := range yahoo {
		if i < gmail {
			rcpts = append(rcpts, fmt.Sprintf("slow%d@gmail.com", i))
		}
		rcpts = append(rcpts, fmt.Sprintf("fast%d@yahoo.com", i))
	}
	if _, err := e.cl.Send(ctx, &mailwavev1.SendRequest{IdempotencyKey: "hol-1", Tenant: "acme", Brand: "shop",
		Recipients: recipients(rcpts...), Content: template("Shop <news@mailwave.test>")}); err != nil {
		t.Fatal(err)
	}
	snap, err := e.sim.Ledger().Wait(ctx, func(s *ispsim.Snapshot) bool { return len(s.Accepted("yahoo", mustAddr("127.0.0.3"))) >= yahoo })
	if err != nil {
		t.Fatal(err)
	}
	ys := arrivals(snap, "yahoo", "127.0.0.3")
	gs := arrivals(snap, "google", "127.0.0.3")
	t.Logf("yahoo: %d in %s; gmail meanwhile: %d", len(ys), ys[len(ys)-1].Sub(ys[0]), len(gs))
	if len(gs) >= gmail {
		t.Fatalf("gmail's batch (%d) was done before yahoo's: nothing was throttled", len(gs))
	}
	if len(gs) > 0 {
		// Gmail at one a second can have had at most one more message
		// than the seconds since its first.
		if bound := 1 + int(ys[len(ys)-1].Sub(gs[0]).Seconds()) + 1; len(gs) > bound {
			t.Errorf("gmail had %d messages while yahoo finished, more than 1/s allows (%d)", len(gs), bound)
		}
	}
	for rcpt, ev := range e.terminal(t, "acme", "hol-1", gmail+yahoo) {
		if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED {
			t.Errorf("%s: %v %s", rcpt, ev.GetKind(), ev.GetResponse())
		}
	}
	gs = arrivals(e.sim.Ledger().Snapshot(), "google", "127.0.0.3")
	if len(gs) != gmail {
		t.Fatalf("%d gmail messages, want %d", len(gs), gmail)
	}
	// One a second: any 3-second window holds at most 1 + 3.
	if got := maxIn(gs, 3*time.Second); got > 4 {
		t.Errorf("%d gmail messages within 3s at 1/s", got)
	}
	if d := gs[len(gs)-1].Sub(gs[0]); d < time.Duration(gmail-2)*time.Second {
		t.Errorf("gmail's %d messages took %s, faster than 1/s", gmail, d)
	}
}
