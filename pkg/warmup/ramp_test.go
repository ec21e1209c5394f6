package warmup_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/testenv"
	"github.com/mailwave/mailwave/pkg/warmup"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// signals is a hand-written Signals: the signal of each calendar day.
type signals struct {
	mu    sync.Mutex
	byDay map[int64]warmup.Signal
	asked []int64
}

func (s *signals) Signal(_ context.Context, _ warmup.Subject, from, to time.Time) (warmup.Signal, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	worst := warmup.Clean
	for d := warmup.DayOf(from); d < warmup.DayOf(to); d++ {
		s.asked = append(s.asked, d)
		worst = max(worst, s.byDay[d])
	}
	return worst, nil
}

var day0 = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)

func small() *warmup.Schedule {
	return &warmup.Schedule{
		Levels:    []warmup.Level{{Days: 2, PerDay: 10}, {Days: 2, PerDay: 20}},
		Then:      warmup.Growth{PerDay: 40, Increase: 20, Until: 100},
		FastShare: 0.9, FastStep: 2,
	}
}

func TestRampCapsAndMovesDayByDay(t *testing.T) {
	rdb, _ := testenv.Redis(t)
	ctx := testenv.Context(t)
	sig := &signals{byDay: map[int64]warmup.Signal{}}
	r := warmup.NewRamp(rdb, "", sig)
	sched := small()
	ip := warmup.Subject{Kind: warmup.IP, ID: "192.0.2.10", Provider: "google"}
	reserve := func(now time.Time, n int64) warmup.Grant {
		t.Helper()
		g, err := r.Reserve(ctx, now, []warmup.Request{{Subject: ip, Schedule: sched, N: n}})
		if err != nil {
			t.Fatal(err)
		}
		return g[0]
	}
	// Day 0: the cap is 10; two requests share it.
	if g := reserve(day0, 6); g.Granted != 6 || g.Cap != 10 || g.Day != 0 {
		t.Fatalf("first: %+v", g)
	}
	if g := reserve(day0.Add(time.Hour), 6); g.Granted != 4 || g.Used != 10 {
		t.Fatalf("second: %+v", g)
	}
	if g := reserve(day0.Add(2*time.Hour), 1); g.Granted != 0 {
		t.Fatalf("over the cap: %+v", g)
	}
	// Day 1: a clean day that used its whole cap advances two ramp days.
	d1 := day0.Add(24 * time.Hour)
	if g := reserve(d1, 100); g.Day != 2 || g.Cap != 20 || g.Granted != 20 {
		t.Fatalf("day 1: %+v", g)
	}
	// Day 2 after a throttle on day 1: the ramp holds.
	sig.byDay[warmup.DayOf(d1)] = warmup.Throttled
	d2 := d1.Add(24 * time.Hour)
	if g := reserve(d2, 5); g.Day != 2 || g.Granted != 5 {
		t.Fatalf("day 2: %+v", g)
	}
	// Day 3 after a clean day with little volume: one day on.
	d3 := d2.Add(24 * time.Hour)
	if g := reserve(d3, 1); g.Day != 3 {
		t.Fatalf("day 3: %+v", g)
	}
	// Nothing sent for three days, then a pause was seen in between: back
	// one level (to ramp day 0), and the signal covers every day since the
	// last sending day.
	sig.byDay[warmup.DayOf(d3)+2] = warmup.Paused
	d7 := d3.Add(4 * 24 * time.Hour)
	sig.asked = nil
	if g := reserve(d7, 50); g.Day != 0 || g.Granted != 10 {
		t.Fatalf("day 7: %+v", g)
	}
	if len(sig.asked) != 4 || sig.asked[0] != warmup.DayOf(d3) {
		t.Errorf("signals asked for days %v, want the 4 days from %d", sig.asked, warmup.DayOf(d3))
	}
	// Release gives volume back.
	if err := r.Release(ctx, d7, ip, 4); err != nil {
		t.Fatal(err)
	}
	if g := reserve(d7, 50); g.Granted != 4 {
		t.Fatalf("after release: %+v", g)
	}
	st, err := r.Status(ctx, d7, ip, sched)
	if err != nil || st.Used != 10 || st.Day != 0 {
		t.Fatalf("status %+v %v", st, err)
	}
}

func TestRampWarmAndForced(t *testing.T) {
	rdb, _ := testenv.Redis(t)
	ctx := testenv.Context(t)
	r := warmup.NewRamp(rdb, "t:", nil)
	sched := small()
	dom := warmup.Subject{Kind: warmup.Domain, ID: "news.shop.example", Provider: "yahoo"}
	now := day0
	// Walk the ramp with full, clean days until it is warm.
	var g warmup.Grant
	for i := 0; i < 10; i++ {
		gs, err := r.Reserve(ctx, now, []warmup.Request{{Subject: dom, Schedule: sched, N: 1000}})
		if err != nil {
			t.Fatal(err)
		}
		g = gs[0]
		if g.Warm {
			break
		}
		if g.Granted != g.Cap {
			t.Fatalf("day %d: %+v", i, g)
		}
		now = now.Add(24 * time.Hour)
	}
	if !g.Warm || g.Granted != 1000 {
		t.Fatalf("not warm after the ramp: %+v", g)
	}
	// Forced volume is counted above the cap.
	fresh := warmup.Subject{Kind: warmup.IP, ID: "192.0.2.11", Provider: "yahoo"}
	gs, err := r.Reserve(ctx, day0, []warmup.Request{
		{Subject: fresh, Schedule: sched, N: 15, Force: true},
		{Subject: fresh, Schedule: sched, N: 5},
	})
	if err != nil {
		t.Fatal(err)
	}
	if gs[0].Granted != 15 || gs[1].Granted != 0 || gs[1].Used != 15 {
		t.Fatalf("forced %+v, then %+v", gs[0], gs[1])
	}
}

// Replicas reserving at once never grant more than the cap together.
func TestRampCapHoldsAcrossReplicas(t *testing.T) {
	rdb, _ := testenv.Redis(t)
	ctx := testenv.Context(t)
	sched := &warmup.Schedule{Levels: []warmup.Level{{Days: 1, PerDay: 500}}, Then: warmup.Growth{PerDay: 1000, Increase: 1, Until: 2000}, FastShare: 1, FastStep: 1}
	ip := warmup.Subject{Kind: warmup.IP, ID: "192.0.2.12", Provider: "microsoft"}
	var mu sync.Mutex
	total := int64(0)
	var wg sync.WaitGroup
	for range 4 {
		r := warmup.NewRamp(rdb, "", nil)
		wg.Go(func() {
			for range 50 {
				g, err := r.Reserve(ctx, day0, []warmup.Request{{Subject: ip, Schedule: sched, N: 7}})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				total += g[0].Granted
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if total != 500 {
		t.Fatalf("granted %d in all, want exactly the cap 500", total)
	}
}

func TestPolicySignalsFromHistory(t *testing.T) {
	ns := testenv.NATS(t)
	_, js := testenv.JetStream(t, ns)
	ctx := testenv.Context(t)
	kv, err := js.KeyValue(ctx, mailwavev1.BucketPolicy)
	if err != nil {
		t.Fatal(err)
	}
	put := func(scope *mailwavev1.PolicyScope, action mailwavev1.PolicyAction, at, until time.Time) {
		pc := &mailwavev1.PolicyChange{Id: at.String(), Scope: scope, Action: action, CreatedAt: timestamppb.New(at)}
		if !until.IsZero() {
			pc.ExpiresAt = timestamppb.New(until)
		}
		b, _ := proto.Marshal(pc)
		if _, err := kv.Put(ctx, mailwavev1.PolicyKey(scope), b); err != nil {
			t.Fatal(err)
		}
	}
	ipScope := &mailwavev1.PolicyScope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_SOURCE_IP, Value: "192.0.2.10", Provider: "google"}
	// A throttle on day 0 from 10:00 to 12:00, then a pause on day 2
	// lifted by a resume the same day.
	put(ipScope, mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE, day0.Add(time.Hour), day0.Add(3*time.Hour))
	put(ipScope, mailwavev1.PolicyAction_POLICY_ACTION_PAUSE, day0.Add(48*time.Hour), time.Time{})
	put(ipScope, mailwavev1.PolicyAction_POLICY_ACTION_RESUME, day0.Add(50*time.Hour), time.Time{})
	ps := &warmup.PolicySignals{KV: kv}
	ip := warmup.Subject{Kind: warmup.IP, ID: "192.0.2.10", Provider: "google"}
	start := warmup.DayStart(warmup.DayOf(day0))
	for _, tc := range []struct {
		from, to time.Time
		want     warmup.Signal
	}{
		{start, start.Add(24 * time.Hour), warmup.Throttled},
		{start.Add(24 * time.Hour), start.Add(48 * time.Hour), warmup.Clean},
		{start.Add(48 * time.Hour), start.Add(72 * time.Hour), warmup.Paused},
		{start.Add(72 * time.Hour), start.Add(96 * time.Hour), warmup.Clean},
		{start, start.Add(96 * time.Hour), warmup.Paused},
	} {
		got, err := ps.Signal(ctx, ip, tc.from, tc.to)
		if err != nil || got != tc.want {
			t.Errorf("[%s, %s): %v %v, want %v", tc.from, tc.to, got, err, tc.want)
		}
	}
	// Another provider and a domain without history are clean.
	for _, s := range []warmup.Subject{{Kind: warmup.IP, ID: "192.0.2.99", Provider: "yahoo"}, {Kind: warmup.Domain, ID: "x.example", Provider: "google"}} {
		if got, err := ps.Signal(ctx, s, start, start.Add(96*time.Hour)); err != nil || got != warmup.Clean {
			t.Errorf("%s: %v %v", s, got, err)
		}
	}
	// A pause on the whole IP (every provider) counts too.
	put(&mailwavev1.PolicyScope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_SOURCE_IP, Value: "192.0.2.99"}, mailwavev1.PolicyAction_POLICY_ACTION_PAUSE, start.Add(time.Hour), start.Add(2*time.Hour))
	if got, _ := ps.Signal(ctx, warmup.Subject{Kind: warmup.IP, ID: "192.0.2.99", Provider: "yahoo"}, start, start.Add(24*time.Hour)); got != warmup.Paused {
		t.Errorf("IP-wide pause: %v", got)
	}
}
