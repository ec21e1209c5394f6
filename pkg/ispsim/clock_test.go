package ispsim_test

import (
	"sync"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/ispsim"
)

func TestFakeClock(t *testing.T) {
	clk := ispsim.NewFakeClock(t0)
	var mu sync.Mutex
	var fired []string
	note := func(s string) func() {
		return func() {
			mu.Lock()
			defer mu.Unlock()
			fired = append(fired, s)
		}
	}
	clk.AfterFunc(3*time.Hour, note("3h"))
	clk.AfterFunc(time.Hour, note("1h"))
	stopped := clk.AfterFunc(2*time.Hour, note("2h"))
	if !stopped.Stop() || stopped.Stop() {
		t.Error("Stop reports wrong")
	}
	if clk.Pending() != 2 {
		t.Errorf("pending %d", clk.Pending())
	}
	clk.Advance(59 * time.Minute)
	if len(fired) != 0 {
		t.Errorf("fired early: %v", fired)
	}
	clk.Advance(72 * time.Hour)
	if len(fired) != 2 || fired[0] != "1h" || fired[1] != "3h" {
		t.Errorf("fired %v, want [1h 3h]", fired)
	}
	if got := clk.Now(); !got.Equal(t0.Add(72*time.Hour + 59*time.Minute)) {
		t.Errorf("now %v", got)
	}
	clk.Set(t0) // never backwards
	if clk.Now().Before(t0.Add(72 * time.Hour)) {
		t.Error("Set moved the clock back")
	}
}
