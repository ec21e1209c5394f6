package ratelimit_test

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/ratelimit"
	"github.com/mailwave/mailwave/pkg/testenv"
)

// TestRateExact drives a window through a span of time, going from each
// refusal straight to the instant it names, and checks that exactly
// Burst + ⌊span/T⌋ requests pass, and that every RetryAfter is exact: one
// microsecond earlier the request is still refused.
func TestRateExact(t *testing.T) {
	tests := []struct {
		name string
		w    ratelimit.Window
		span time.Duration
		want int
	}{
		{"5 per second", ratelimit.Rate(5, time.Second), 10 * time.Second, 5 + 50},
		{"per second, burst 1", ratelimit.Window{Limit: 20, Per: time.Second, Burst: 1}, 3 * time.Second, 1 + 60},
		{"3000 per hour, burst 250", ratelimit.Window{Limit: 3000, Per: time.Hour, Burst: 250}, 10 * time.Minute, 250 + 500},
		{"throttled to half a message per second", ratelimit.Rate(5, time.Second).Scale(0.1), time.Minute, 1 + 30},
		// T = ⌈1s/3⌉ = 333334µs: rounding up may only lose a request.
		{"3 per second rounds up", ratelimit.Rate(3, time.Second), 10 * time.Second, 3 + 29},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			l, _ := setup(t, c)
			ctx := testenv.Context(t)
			end := c.Now().Add(tt.span)
			got := 0
			for {
				r, err := l.Allow(ctx, "src:127.0.0.2|prov:google", 1, tt.w)
				if err != nil {
					t.Fatal(err)
				}
				if r.Allowed {
					if r.RetryAfter != 0 || r.Window != -1 {
						t.Fatalf("allowed with %+v", r)
					}
					got++
					continue
				}
				if r.RetryAfter <= 0 || r.Window != 0 {
					t.Fatalf("refused with %+v", r)
				}
				if c.Now().Add(r.RetryAfter).After(end) {
					break
				}
				// One microsecond early is still too early, by exactly that.
				c.Add(r.RetryAfter - time.Microsecond)
				early, err := l.Allow(ctx, "src:127.0.0.2|prov:google", 1, tt.w)
				if err != nil {
					t.Fatal(err)
				}
				if early.Allowed || early.RetryAfter != time.Microsecond {
					t.Fatalf("1µs before the retry time: %+v, want refused for 1µs", early)
				}
				c.Add(time.Microsecond)
			}
			if got != tt.want {
				t.Errorf("%d requests passed in %s, want %d", got, tt.span, tt.want)
			}
		})
	}
}

// TestCost charges several requests at once.
func TestCost(t *testing.T) {
	c := newClock()
	l, _ := setup(t, c)
	ctx := testenv.Context(t)
	w := ratelimit.Rate(10, time.Second) // T = 100ms, burst 10
	for _, step := range []struct {
		n       int64
		allowed bool
		retry   time.Duration
	}{
		{4, true, 0},
		{4, true, 0},
		{4, false, 200 * time.Millisecond}, // 2 left: 2 more intervals needed
		{2, true, 0},
		{1, false, 100 * time.Millisecond},
	} {
		r, err := l.Allow(ctx, "k", step.n, w)
		if err != nil {
			t.Fatal(err)
		}
		if r.Allowed != step.allowed || r.RetryAfter != step.retry {
			t.Fatalf("cost %d: %+v, want allowed=%v retry=%s", step.n, r, step.allowed, step.retry)
		}
	}
}

// TestMultiWindowAllOrNothing checks that a request one window refuses
// charges no other window, and that the longest wait is reported.
func TestMultiWindowAllOrNothing(t *testing.T) {
	c := newClock()
	l, _ := setup(t, c)
	ctx := testenv.Context(t)
	perSecond := ratelimit.Window{Limit: 10, Per: time.Second, Burst: 2} // T = 100ms
	perMinute := ratelimit.Window{Limit: 6, Per: time.Minute, Burst: 3}  // T = 10s
	allow := func(want bool, wantWindow int, wantRetry time.Duration) {
		t.Helper()
		r, err := l.Allow(ctx, "k", 1, perSecond, perMinute)
		if err != nil {
			t.Fatal(err)
		}
		if r.Allowed != want || r.Window != wantWindow || r.RetryAfter != wantRetry {
			t.Fatalf("at +%s: %+v, want allowed=%v window=%d retry=%s", c.Now().Sub(newClock().Now()), r, want, wantWindow, wantRetry)
		}
	}
	allow(true, -1, 0)
	allow(true, -1, 0)
	// The per-second burst is spent; the per-minute window would allow.
	// Many refusals must leave the per-minute window untouched.
	for range 50 {
		allow(false, 0, 100*time.Millisecond)
	}
	c.Add(100 * time.Millisecond)
	allow(true, -1, 0) // the third of the per-minute burst
	// Both windows refuse now; the per-minute one waits longer.
	for range 50 {
		allow(false, 1, 9900*time.Millisecond)
	}
	// Past the per-second window's wait only the per-minute one refuses;
	// these refusals must not charge the per-second window.
	c.Add(200 * time.Millisecond)
	for range 50 {
		allow(false, 1, 9700*time.Millisecond)
	}
	c.Add(9700*time.Millisecond - time.Microsecond)
	allow(false, 1, time.Microsecond)
	c.Add(time.Microsecond)
	allow(true, -1, 0)
	allow(false, 1, 10*time.Second)
}

// TestThrottleAppliesAtOnce: a scaled window spaces the next requests by
// the new interval, with no reset of the key.
func TestThrottleAppliesAtOnce(t *testing.T) {
	c := newClock()
	l, _ := setup(t, c)
	ctx := testenv.Context(t)
	w := ratelimit.Window{Limit: 10, Per: time.Second, Burst: 1}
	if r, _ := l.Allow(ctx, "k", 1, w); !r.Allowed {
		t.Fatalf("first request refused: %+v", r)
	}
	c.Add(100 * time.Millisecond)
	slow := w.Scale(0.1) // 1 per second
	if slow.Per != w.Per || slow.Burst != 1 || slow.Limit != 1 {
		t.Fatalf("Scale(0.1) = %v", slow)
	}
	if r, _ := l.Allow(ctx, "k", 1, slow); !r.Allowed {
		t.Fatalf("request at the old pace refused: %+v", r)
	}
	c.Add(100 * time.Millisecond)
	r, err := l.Allow(ctx, "k", 1, slow)
	if err != nil {
		t.Fatal(err)
	}
	if r.Allowed || r.RetryAfter != 900*time.Millisecond {
		t.Fatalf("after the throttle: %+v, want refused for 900ms", r)
	}
}

// TestRedisClock uses the Redis server's clock and checks the documented
// key layout and expiry.
func TestRedisClock(t *testing.T) {
	l, rdb := setup(t, nil)
	ctx := testenv.Context(t)
	w := ratelimit.Window{Limit: 1, Per: time.Hour, Burst: 3}
	for i := range 3 {
		if r, err := l.Allow(ctx, "src:127.0.0.2|prov:yahoo", 1, w); err != nil || !r.Allowed {
			t.Fatalf("request %d: %+v, %v", i, r, err)
		}
	}
	r, err := l.Allow(ctx, "src:127.0.0.2|prov:yahoo", 1, w)
	if err != nil {
		t.Fatal(err)
	}
	// The fourth waits for one interval (an hour) less the time the test
	// took so far.
	if r.Allowed || r.RetryAfter > time.Hour || r.RetryAfter < time.Hour-time.Minute {
		t.Fatalf("fourth request: %+v, want refused for about an hour", r)
	}
	const key = "mw:rl:src:127.0.0.2|prov:yahoo"
	ttl, err := rdb.PTTL(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl > 3*time.Hour || ttl < 3*time.Hour-time.Minute {
		t.Errorf("TAT key expires in %s, want about 3h", ttl)
	}
	// A shorter window used on the same key later must not shorten the
	// key's life below the hour window's TAT.
	if r, err := l.Allow(ctx, "src:127.0.0.2|prov:yahoo", 1, ratelimit.Rate(10, time.Second)); err != nil || !r.Allowed {
		t.Fatalf("per-second request: %+v, %v", r, err)
	}
	if ttl, err := rdb.PTTL(ctx, key).Result(); err != nil || ttl < 3*time.Hour-time.Minute {
		t.Errorf("after a per-second request the key expires in %s (%v), want about 3h", ttl, err)
	}
	tat, err := rdb.HGet(ctx, key, "1h0m0s").Int64()
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(time.UnixMicro(tat)); d > 3*time.Hour || d < 3*time.Hour-time.Minute {
		t.Errorf("hour window TAT is %s ahead, want about 3h", d)
	}
}

func TestPrefix(t *testing.T) {
	rdb, _ := testenv.Redis(t)
	ctx := testenv.Context(t)
	l := ratelimit.New(rdb, ratelimit.Options{Prefix: "tenantA:"})
	if _, err := l.Allow(ctx, "k", 1, ratelimit.Rate(1, time.Second)); err != nil {
		t.Fatal(err)
	}
	if n, err := rdb.HExists(ctx, "tenantA:rl:k", "1s").Result(); err != nil || !n {
		t.Fatalf("prefixed key exists = %v, %v", n, err)
	}
}

func TestInvalid(t *testing.T) {
	l, _ := setup(t, newClock())
	ctx := testenv.Context(t)
	ok := ratelimit.Rate(5, time.Second)
	tests := []struct {
		name    string
		key     string
		n       int64
		windows []ratelimit.Window
		want    error
	}{
		{"empty key", "", 1, []ratelimit.Window{ok}, ratelimit.ErrInvalidKey},
		{"empty key, no window", "", 1, nil, ratelimit.ErrInvalidKey},
		{"zero limit", "k", 1, []ratelimit.Window{{Limit: 0, Per: time.Second, Burst: 1}}, ratelimit.ErrInvalidWindow},
		{"paused window", "k", 1, []ratelimit.Window{ok.Scale(0)}, ratelimit.ErrInvalidWindow},
		{"NaN limit", "k", 1, []ratelimit.Window{{Limit: math.NaN(), Per: time.Second, Burst: 1}}, ratelimit.ErrInvalidWindow},
		{"infinite limit", "k", 1, []ratelimit.Window{{Limit: math.Inf(1), Per: time.Second, Burst: 1}}, ratelimit.ErrInvalidWindow},
		{"zero period", "k", 1, []ratelimit.Window{{Limit: 1, Burst: 1}}, ratelimit.ErrInvalidWindow},
		{"zero burst", "k", 1, []ratelimit.Window{{Limit: 1, Per: time.Second}}, ratelimit.ErrInvalidWindow},
		{"centuries", "k", 1, []ratelimit.Window{{Limit: 1, Per: 1000 * 24 * time.Hour, Burst: 1000}}, ratelimit.ErrInvalidWindow},
		{"same period twice", "k", 1, []ratelimit.Window{ok, ratelimit.Rate(10, time.Second)}, ratelimit.ErrInvalidWindow},
		{"zero cost", "k", 0, []ratelimit.Window{ok}, ratelimit.ErrInvalidWindow},
		{"cost above burst", "k", 6, []ratelimit.Window{ok}, ratelimit.ErrCostExceedsBurst},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := l.Allow(ctx, tt.key, tt.n, tt.windows...)
			if !errors.Is(err, tt.want) {
				t.Errorf("Allow: %v, want %v", err, tt.want)
			}
			_, err = l.AllowBatch(ctx, []ratelimit.Request{{Key: "fine", N: 1, Windows: []ratelimit.Window{ok}}, {Key: tt.key, N: tt.n, Windows: tt.windows}})
			if !errors.Is(err, tt.want) {
				t.Errorf("AllowBatch: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestNoWindowsAllows(t *testing.T) {
	l, _ := setup(t, newClock())
	r, err := l.Allow(testenv.Context(t), "k", 1)
	if err != nil || !r.Allowed || r.Window != -1 {
		t.Fatalf("Allow without windows = %+v, %v", r, err)
	}
}

// TestReplicasShareLimit: several replicas, each with its own connections,
// hammer one key at one instant; exactly the burst passes.
func TestReplicasShareLimit(t *testing.T) {
	for _, clockName := range []string{"injected", "redis"} {
		t.Run(clockName, func(t *testing.T) {
			var c *clock
			if clockName == "injected" {
				c = newClock()
			}
			ls := replicas(t, 4, c)
			ctx := testenv.Context(t)
			// 100 per hour, burst 50: no refill within the test.
			w := ratelimit.Window{Limit: 100, Per: time.Hour, Burst: 50}
			var allowed, refused atomic.Int64
			var wg sync.WaitGroup
			for i := range 16 {
				l := ls[i%len(ls)]
				wg.Go(func() {
					for range 20 {
						r, err := l.Allow(ctx, "shared", 1, w, ratelimit.Rate(1000, time.Second))
						if err != nil {
							t.Error(err)
							return
						}
						if r.Allowed {
							allowed.Add(1)
						} else {
							refused.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if allowed.Load() != 50 || refused.Load() != 16*20-50 {
				t.Errorf("allowed %d, refused %d; want 50 and %d", allowed.Load(), refused.Load(), 16*20-50)
			}
		})
	}
}

// TestAllowBatch decides a batch in order, each request on its own, and
// survives a flushed script cache.
func TestAllowBatch(t *testing.T) {
	c := newClock()
	l, rdb := setup(t, c)
	ctx := testenv.Context(t)
	w := ratelimit.Window{Limit: 1, Per: time.Second, Burst: 2}
	reqs := []ratelimit.Request{
		{Key: "a", N: 1, Windows: []ratelimit.Window{w}},
		{Key: "b", N: 2, Windows: []ratelimit.Window{w}},
		{Key: "a", N: 1, Windows: []ratelimit.Window{w}},
		{Key: "b", N: 1, Windows: []ratelimit.Window{w}},
		{Key: "c"}, // no windows: allowed without Redis
		{Key: "a", N: 1, Windows: []ratelimit.Window{w}},
	}
	want := []ratelimit.Result{
		{Allowed: true, Window: -1},
		{Allowed: true, Window: -1},
		{Allowed: true, Window: -1},
		{RetryAfter: time.Second, Window: 0},
		{Allowed: true, Window: -1},
		{RetryAfter: time.Second, Window: 0},
	}
	check := func(stage string) {
		t.Helper()
		got, err := l.AllowBatch(ctx, reqs)
		if err != nil {
			t.Fatalf("%s: %v", stage, err)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s: request %d = %+v, want %+v", stage, i, got[i], want[i])
			}
		}
	}
	check("first batch")
	// A Redis restart empties the script cache: the batch must reload the
	// script and still charge each request once.
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	c.Add(2 * time.Second)
	check("after SCRIPT FLUSH")
	if got, err := l.AllowBatch(ctx, nil); err != nil || len(got) != 0 {
		t.Fatalf("empty batch = %v, %v", got, err)
	}
}

// TestAllowAfterScriptFlush: the single-request path falls back to EVAL.
func TestAllowAfterScriptFlush(t *testing.T) {
	l, rdb := setup(t, newClock())
	ctx := testenv.Context(t)
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	r, err := l.Allow(ctx, "k", 1, ratelimit.Rate(1, time.Second))
	if err != nil || !r.Allowed {
		t.Fatalf("Allow after SCRIPT FLUSH = %+v, %v", r, err)
	}
}

func TestWindowString(t *testing.T) {
	if got, want := ratelimit.Rate(3000, time.Hour).String(), "3000/1h0m0s burst 3000"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := ratelimit.Rate(0.5, time.Second); got.Burst != 1 {
		t.Errorf("Rate(0.5, 1s).Burst = %d, want 1", got.Burst)
	}
}

// TestReservations: a backlog asks once each. Requests beyond the burst
// get consecutive slots one emission interval apart, up to the horizon;
// asking again before a slot says how long is left; from the slot on the
// request is allowed without a second charge until it is redeemed; beyond
// the horizon nothing is charged.
func TestReservations(t *testing.T) {
	c := newClock()
	l, _ := setup(t, c)
	ctx := testenv.Context(t)
	w := ratelimit.Window{Limit: 10, Per: time.Second, Burst: 2} // T = 100ms
	ask := func(id string) ratelimit.Result {
		t.Helper()
		r, err := l.Do(ctx, ratelimit.Request{Key: "k", N: 1, Windows: []ratelimit.Window{w}, Reservation: id, Horizon: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	redeem := func(id string) {
		t.Helper()
		if err := l.Redeem(ctx, "k", id); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"m0", "m1"} {
		if r := ask(id); !r.Allowed || r.Reserved {
			t.Fatalf("%s within the burst: %+v", id, r)
		}
	}
	// m1 found no connection: asking again is allowed, and charges
	// nothing (m2 still gets the first slot after the burst).
	if r := ask("m1"); !r.Allowed {
		t.Fatalf("m1 again before its redemption: %+v", r)
	}
	redeem("m0")
	redeem("m1")
	// m2..m6 reserve the next five slots, 100ms apart; m7 is past the
	// horizon and charges nothing.
	for i := 2; i <= 6; i++ {
		r := ask(fmt.Sprint("m", i))
		if want := time.Duration(i-1) * 100 * time.Millisecond; r.Allowed || !r.Reserved || r.RetryAfter != want {
			t.Fatalf("m%d: %+v, want reserved in %s", i, r, want)
		}
	}
	if r := ask("m7"); r.Allowed || r.Reserved || r.RetryAfter != 600*time.Millisecond {
		t.Fatalf("m7 beyond the horizon: %+v, want refused for 600ms", r)
	}
	// Early: the same slot, less the time gone by.
	c.Add(150 * time.Millisecond)
	if r := ask("m3"); !r.Reserved || r.RetryAfter != 50*time.Millisecond {
		t.Fatalf("m3 early: %+v, want reserved in 50ms", r)
	}
	// From its slot on m3 passes without a charge, until it is redeemed;
	// then it is a new request, charged after m6's slot.
	c.Add(50 * time.Millisecond)
	for range 2 {
		if r := ask("m3"); !r.Allowed {
			t.Fatalf("m3 at its slot: %+v", r)
		}
	}
	redeem("m3")
	if r := ask("m3"); r.Allowed || !r.Reserved || r.RetryAfter != 400*time.Millisecond {
		t.Fatalf("m3 after its redemption: %+v, want a new slot in 400ms", r)
	}
	if r := ask("m8"); !r.Reserved || r.RetryAfter != 500*time.Millisecond {
		t.Fatalf("m8: %+v, want the slot after m3's new one, in 500ms", r)
	}
	c.Add(time.Second)
	for _, id := range []string{"m2", "m4", "m5", "m6", "m8"} {
		if r := ask(id); !r.Allowed {
			t.Fatalf("%s after its slot: %+v", id, r)
		}
	}
	if _, err := l.Do(ctx, ratelimit.Request{Key: "k", N: 1, Windows: []ratelimit.Window{w}, Reservation: "x"}); !errors.Is(err, ratelimit.ErrInvalidWindow) {
		t.Fatalf("a reservation without a horizon: %v", err)
	}
}

// TestLazyReservations: a lazy request allowed at once records nothing (it
// is charged like any other, and asking again charges again), unless the
// caller holds its slot, which then passes free until redeemed; a lazy
// request beyond the burst reserves its slot as any other, and is Held
// when it comes back at it.
func TestLazyReservations(t *testing.T) {
	c := newClock()
	l, rdb := setup(t, c)
	ctx := testenv.Context(t)
	w := ratelimit.Window{Limit: 10, Per: time.Second, Burst: 2} // T = 100ms
	ask := func(id string) ratelimit.Result {
		t.Helper()
		r, err := l.Do(ctx, ratelimit.Request{Key: "k", N: 1, Windows: []ratelimit.Window{w}, Reservation: id, Horizon: time.Second, Lazy: true})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := ask("a"); !r.Allowed || r.Held || r.Reserved {
		t.Fatalf("a within the burst: %+v", r)
	}
	if n, _ := rdb.HLen(ctx, "mw:rl:k").Result(); n != 1 {
		t.Fatalf("a lazy request allowed at once left %d fields, want only the window's TAT", n)
	}
	// b is allowed too, but finds no connection: it holds its slot.
	if r := ask("b"); !r.Allowed || r.Held {
		t.Fatalf("b within the burst: %+v", r)
	}
	if err := l.Hold(ctx, "k", "b", time.Second); err != nil {
		t.Fatal(err)
	}
	// The burst is spent: c reserves the next slot.
	if r := ask("c"); !r.Reserved || r.RetryAfter != 100*time.Millisecond {
		t.Fatalf("c after the burst: %+v, want reserved in 100ms", r)
	}
	// b comes back with a connection: allowed free, and Held.
	for range 2 {
		if r := ask("b"); !r.Allowed || !r.Held {
			t.Fatalf("b holding its slot: %+v", r)
		}
	}
	if err := l.Redeem(ctx, "k", "b"); err != nil {
		t.Fatal(err)
	}
	// Asking again after the redemption is a new request: past c's slot.
	if r := ask("b"); !r.Reserved || r.RetryAfter != 200*time.Millisecond {
		t.Fatalf("b after its redemption: %+v, want a new slot in 200ms", r)
	}
	c.Add(100 * time.Millisecond)
	if r := ask("c"); !r.Allowed || !r.Held {
		t.Fatalf("c at its slot: %+v", r)
	}
	// A second ask of a lazy request allowed at once charged twice: a has
	// no hold.
	c.Add(time.Second)
	for i, want := range []bool{true, true, false} {
		if r := ask("a"); r.Allowed != want || r.Held {
			t.Fatalf("a, ask %d: %+v, want allowed %v and never held", i, r, want)
		}
	}
	if err := l.Hold(ctx, "k", "", time.Second); !errors.Is(err, ratelimit.ErrInvalidWindow) {
		t.Fatalf("a hold without an id: %v", err)
	}
}
