package shaping_test

import (
	"sync"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/ratelimit"
	"github.com/mailwave/mailwave/pkg/shaping"
	"github.com/mailwave/mailwave/pkg/testenv"
)

var google = shaping.Limits{MaxConnections: 10, MaxMessagesPerConnection: 100, MessagesPerSecond: 10,
	MessagesPerMinute: 300, MessagesPerHour: 3000, ConnectionsPerMinute: 30}

func TestWindows(t *testing.T) {
	tests := []struct {
		name        string
		l           shaping.Limits
		messages    []ratelimit.Window
		connections []ratelimit.Window
	}{
		{"shipped google", google,
			[]ratelimit.Window{
				{Limit: 10, Per: time.Second, Burst: 10},
				{Limit: 296, Per: time.Minute, Burst: 5},  // 300/60
				{Limit: 2951, Per: time.Hour, Burst: 50}}, // 3000/60
			[]ratelimit.Window{{Limit: 21, Per: time.Minute, Burst: 10}}},
		{"minute off: the hour's burst is capped by the second's", shaping.Limits{MaxConnections: 2, MessagesPerSecond: 2, MessagesPerHour: 600, ConnectionsPerMinute: 1},
			[]ratelimit.Window{
				{Limit: 2, Per: time.Second, Burst: 2},
				{Limit: 599, Per: time.Hour, Burst: 2}},
			[]ratelimit.Window{{Limit: 1, Per: time.Minute, Burst: 1}}},
		{"throttled to a tenth", google.Scale(0.1),
			[]ratelimit.Window{
				{Limit: 1, Per: time.Second, Burst: 1},
				{Limit: 30, Per: time.Minute, Burst: 1},
				{Limit: 296, Per: time.Hour, Burst: 5}},
			[]ratelimit.Window{{Limit: 3, Per: time.Minute, Burst: 1}}},
		{"paused", google.Scale(0), nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.l.MessageWindows(); !sameWindows(got, tt.messages) {
				t.Errorf("MessageWindows() = %v, want %v", got, tt.messages)
			}
			if got := tt.l.ConnectionWindows(); !sameWindows(got, tt.connections) {
				t.Errorf("ConnectionWindows() = %v, want %v", got, tt.connections)
			}
		})
	}
}

func sameWindows(a, b []ratelimit.Window) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Per != b[i].Per || a[i].Burst != b[i].Burst || a[i].Limit-b[i].Limit > 1e-9 || b[i].Limit-a[i].Limit > 1e-9 {
			return false
		}
	}
	return true
}

func TestScaleAndPin(t *testing.T) {
	half := google.Scale(0.5)
	if half.MessagesPerHour != 1500 || half.MessagesPerMinute != 150 || half.MessagesPerSecond != 5 ||
		half.ConnectionsPerMinute != 15 || half.MaxConnections != 5 || half.MaxMessagesPerConnection != 100 || half.Paused {
		t.Errorf("Scale(0.5) = %+v", half)
	}
	if tiny := google.Scale(0.001); tiny.MaxConnections != 1 || tiny.Paused {
		t.Errorf("Scale(0.001) = %+v, want one connection, not paused", tiny)
	}
	for _, f := range []float64{0, -1} {
		if p := google.Scale(f); !p.Paused || p.MessageWindows() != nil {
			t.Errorf("Scale(%g) = %+v, want paused", f, p)
		}
	}
	pinned := google.Pin(120)
	if pinned.MessagesPerHour != 120 || pinned.MessagesPerMinute != 120 || pinned.MessagesPerSecond != 10 {
		t.Errorf("Pin(120) = %+v", pinned)
	}
	if high := google.Pin(10000); high.MessagesPerHour != 10000 || high.MessagesPerMinute != 300 {
		t.Errorf("Pin(10000) = %+v", high)
	}
	if p := google.Scale(0).Pin(100); p.Paused || p.MessagesPerHour != 100 {
		t.Errorf("a pin after a pause = %+v, want sending at the pinned rate", p)
	}
	if p := google.Pin(0); !p.Paused {
		t.Errorf("Pin(0) = %+v, want paused", p)
	}
}

// TestWindowsHoldInEverySlidingWindow drives the windows of a policy
// through three hours on the real limiter, sending whenever it allows, and
// checks that no sliding second, minute or hour carries more than its
// limit, while the hour still carries nearly all of it.
func TestWindowsHoldInEverySlidingWindow(t *testing.T) {
	p, err := shaping.Parse([]byte(`
providers:
  tiny: {messages_per_second: 2, messages_per_minute: 12, messages_per_hour: 120}
`))
	if err != nil {
		t.Fatal(err)
	}
	l := p.Limits("tiny", "", "")
	rdb, _ := testenv.Redis(t)
	var mu sync.Mutex
	now := time.Date(2026, 11, 3, 9, 0, 0, 0, time.UTC)
	lim := ratelimit.New(rdb, ratelimit.Options{Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
	ctx := testenv.Context(t)
	start := now
	end := start.Add(3 * time.Hour)
	var sent []time.Time
	for now.Before(end) {
		r, err := lim.Allow(ctx, "src:192.0.2.1|prov:tiny", 1, l.MessageWindows()...)
		if err != nil {
			t.Fatal(err)
		}
		if r.Allowed {
			sent = append(sent, now)
			continue
		}
		mu.Lock()
		now = now.Add(r.RetryAfter)
		mu.Unlock()
	}
	for _, w := range []struct {
		per   time.Duration
		limit int
	}{{time.Second, 2}, {time.Minute, 12}, {time.Hour, 120}} {
		j := 0
		for i := range sent {
			for j < len(sent) && sent[j].Sub(sent[i]) < w.per {
				j++
			}
			if j-i > w.limit {
				t.Fatalf("%d messages within %s from %s, limit %d", j-i, w.per, sent[i].Sub(start), w.limit)
			}
		}
	}
	// The sustained rate loses only the hour window's burst (2 a minute
	// ⇒ burst 2: 119 an hour).
	if len(sent) < 3*119 {
		t.Errorf("%d messages in 3h, want at least %d", len(sent), 3*119)
	}
}
