package ispsim

import (
	"sort"
	"sync"
	"time"
)

// Clock is the simulator's notion of time. Rate windows, greylist windows,
// DSN and complaint delays and block durations all read it, so tests can
// run a 72-hour scenario in seconds with a FakeClock. Timeouts of network
// I/O and the "slow server" delays use real time.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine, or from Advance for a
	// FakeClock, once the clock has passed now+d.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc.
type Timer interface {
	// Stop prevents the call; it reports whether it did.
	Stop() bool
}

// RealClock returns the wall clock.
func RealClock() Clock { return realClock{} }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) Timer {
	return time.AfterFunc(d, f)
}

// FakeClock is a Clock that moves only when told to. Its zero value is not
// usable; use NewFakeClock.
type FakeClock struct {
	mu      sync.Mutex
	now     time.Time
	seq     int64
	pending map[int64]*fakeTimer
}

type fakeTimer struct {
	c    *FakeClock
	id   int64
	when time.Time
	f    func()
}

// NewFakeClock returns a FakeClock reading start.
func NewFakeClock(start time.Time) *FakeClock {
	return &FakeClock{now: start, pending: map[int64]*fakeTimer{}}
}

// Now returns the fake time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc schedules f for when the clock passes now+d. A d <= 0 runs f
// in a new goroutine at once.
func (c *FakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &fakeTimer{c: c, id: c.seq, when: c.now.Add(d), f: f}
	if d <= 0 {
		go f()
		return t
	}
	c.pending[t.id] = t
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	_, ok := t.c.pending[t.id]
	delete(t.c.pending, t.id)
	return ok
}

// Advance moves the clock forward by d and runs, in time order and before
// returning, every function whose time has come.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
	c.fire()
}

// Set moves the clock to t (never backwards) and runs what is due.
func (c *FakeClock) Set(t time.Time) {
	c.mu.Lock()
	if t.After(c.now) {
		c.now = t
	}
	c.mu.Unlock()
	c.fire()
}

// Pending is the number of functions waiting for the clock.
func (c *FakeClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

func (c *FakeClock) fire() {
	c.mu.Lock()
	var due []*fakeTimer
	for id, t := range c.pending {
		if !t.when.After(c.now) {
			due = append(due, t)
			delete(c.pending, id)
		}
	}
	c.mu.Unlock()
	sort.Slice(due, func(i, j int) bool {
		if due[i].when.Equal(due[j].when) {
			return due[i].id < due[j].id
		}
		return due[i].when.Before(due[j].when)
	})
	for _, t := range due {
		t.f()
	}
}
