package ratelimit_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/ratelimit"
	"github.com/mailwave/mailwave/pkg/testenv"
)

// TestLeasesCappedAcrossReplicas: replicas racing for one key's slots get
// exactly max of them, and the refused are told when the oldest expires.
func TestLeasesCappedAcrossReplicas(t *testing.T) {
	c := newClock()
	ls := replicas(t, 3, c)
	ctx := testenv.Context(t)
	const max, ttl = 5, 30 * time.Second
	var mu sync.Mutex
	var granted []ratelimit.Lease
	var wg sync.WaitGroup
	for i := range 12 {
		l := ls[i%len(ls)]
		wg.Go(func() {
			for range 5 {
				g, err := l.Acquire(ctx, "src:127.0.0.2|prov:google", max, ttl)
				if err != nil {
					t.Error(err)
					return
				}
				if g.OK {
					mu.Lock()
					granted = append(granted, g.Lease)
					mu.Unlock()
					continue
				}
				if g.Held != max || g.RetryAfter != ttl {
					t.Errorf("refused grant %+v, want held %d, retry %s", g, max, ttl)
				}
			}
		})
	}
	wg.Wait()
	if len(granted) != max {
		t.Fatalf("%d leases granted, want %d", len(granted), max)
	}
	ids := map[string]bool{}
	for _, l := range granted {
		if ids[l.ID] || len(l.ID) != 32 || !l.Expires.Equal(c.Now().Add(ttl)) {
			t.Errorf("lease %+v: duplicate id, bad id or expiry", l)
		}
		ids[l.ID] = true
	}
	if n, err := ls[0].Held(ctx, "src:127.0.0.2|prov:google"); err != nil || n != max {
		t.Errorf("Held = %d, %v; want %d", n, err, max)
	}
	// Another key is not affected.
	if g, err := ls[1].Acquire(ctx, "src:127.0.0.3|prov:google", max, ttl); err != nil || !g.OK || g.Held != 1 {
		t.Errorf("other key: %+v, %v", g, err)
	}
}

// TestLeaseExpiry: a lease not renewed lapses exactly at its expiry, and its
// holder learns it has lost it.
func TestLeaseExpiry(t *testing.T) {
	c := newClock()
	l, _ := setup(t, c)
	ctx := testenv.Context(t)
	const ttl = 30 * time.Second
	a, err := l.Acquire(ctx, "k", 1, ttl)
	if err != nil || !a.OK {
		t.Fatalf("first Acquire = %+v, %v", a, err)
	}
	c.Add(ttl - time.Microsecond)
	if g, err := l.Acquire(ctx, "k", 1, ttl); err != nil || g.OK || g.RetryAfter != time.Microsecond {
		t.Fatalf("Acquire 1µs before expiry = %+v, %v; want refused for 1µs", g, err)
	}
	c.Add(time.Microsecond)
	b, err := l.Acquire(ctx, "k", 1, ttl)
	if err != nil || !b.OK || b.Held != 1 {
		t.Fatalf("Acquire at expiry = %+v, %v; want granted, held 1", b, err)
	}
	if _, err := l.Renew(ctx, a.Lease, ttl); !errors.Is(err, ratelimit.ErrLeaseLost) {
		t.Errorf("Renew of the lapsed lease: %v, want ErrLeaseLost", err)
	}
	if err := l.Release(ctx, a.Lease); !errors.Is(err, ratelimit.ErrLeaseLost) {
		t.Errorf("Release of the lapsed lease: %v, want ErrLeaseLost", err)
	}
	if n, err := l.Held(ctx, "k"); err != nil || n != 1 {
		t.Errorf("Held = %d, %v; want 1", n, err)
	}
}

func TestLeaseRenew(t *testing.T) {
	c := newClock()
	l, _ := setup(t, c)
	ctx := testenv.Context(t)
	const ttl = 10 * time.Second
	g, err := l.Acquire(ctx, "k", 1, ttl)
	if err != nil || !g.OK {
		t.Fatalf("Acquire = %+v, %v", g, err)
	}
	c.Add(8 * time.Second)
	renewed, err := l.Renew(ctx, g.Lease, ttl)
	if err != nil {
		t.Fatal(err)
	}
	if want := c.Now().Add(ttl); !renewed.Expires.Equal(want) || renewed.ID != g.Lease.ID {
		t.Fatalf("renewed lease %+v, want expiry %s", renewed, want)
	}
	c.Add(7 * time.Second) // past the first expiry, before the renewed one
	if other, err := l.Acquire(ctx, "k", 1, ttl); err != nil || other.OK || other.RetryAfter != 3*time.Second {
		t.Fatalf("Acquire while the renewed lease holds = %+v, %v; want refused for 3s", other, err)
	}
	if err := l.Release(ctx, renewed); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx, renewed); !errors.Is(err, ratelimit.ErrLeaseLost) {
		t.Errorf("second Release: %v, want ErrLeaseLost", err)
	}
	if other, err := l.Acquire(ctx, "k", 1, ttl); err != nil || !other.OK {
		t.Fatalf("Acquire after Release = %+v, %v", other, err)
	}
}

// TestLeaseLowerMax: a lower maximum refuses new leases until enough are
// released.
func TestLeaseLowerMax(t *testing.T) {
	l, _ := setup(t, newClock())
	ctx := testenv.Context(t)
	var held []ratelimit.Lease
	for range 3 {
		g, err := l.Acquire(ctx, "k", 3, time.Minute)
		if err != nil || !g.OK {
			t.Fatalf("Acquire = %+v, %v", g, err)
		}
		held = append(held, g.Lease)
	}
	for i, wantOK := range []bool{false, false, true} {
		g, err := l.Acquire(ctx, "k", 2, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if g.OK != wantOK {
			t.Fatalf("after %d releases: Acquire with max 2 = %+v, want OK=%v", i, g, wantOK)
		}
		if !wantOK {
			if err := l.Release(ctx, held[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestLeaseRedisClock: with the Redis server's clock, a short lease lapses
// by itself and its key disappears.
func TestLeaseRedisClock(t *testing.T) {
	l, rdb := setup(t, nil)
	ctx := testenv.Context(t)
	g, err := l.Acquire(ctx, "src:127.0.0.2|prov:apple", 1, 50*time.Millisecond)
	if err != nil || !g.OK {
		t.Fatalf("Acquire = %+v, %v", g, err)
	}
	if n, err := rdb.Exists(ctx, "mw:lease:src:127.0.0.2|prov:apple").Result(); err != nil || n != 1 {
		t.Fatalf("lease key exists = %d, %v", n, err)
	}
	if g, err := l.Acquire(ctx, "src:127.0.0.2|prov:apple", 1, time.Minute); err != nil || g.OK || g.RetryAfter > 50*time.Millisecond {
		t.Fatalf("second Acquire = %+v, %v; want refused within 50ms", g, err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		n, err := rdb.Exists(ctx, "mw:lease:src:127.0.0.2|prov:apple").Result()
		return err == nil && n == 0
	}, "the lease key did not expire")
	if n, err := l.Held(ctx, "src:127.0.0.2|prov:apple"); err != nil || n != 0 {
		t.Fatalf("Held = %d, %v; want 0", n, err)
	}
	if g, err := l.Acquire(ctx, "src:127.0.0.2|prov:apple", 1, time.Minute); err != nil || !g.OK {
		t.Fatalf("Acquire after expiry = %+v, %v", g, err)
	}
}

func TestLeaseInvalid(t *testing.T) {
	l, _ := setup(t, newClock())
	ctx := testenv.Context(t)
	tests := []struct {
		name string
		key  string
		max  int
		ttl  time.Duration
		want error
	}{
		{"empty key", "", 1, time.Second, ratelimit.ErrInvalidKey},
		{"zero max", "k", 0, time.Second, ratelimit.ErrInvalidLease},
		{"short ttl", "k", 1, time.Microsecond, ratelimit.ErrInvalidLease},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := l.Acquire(ctx, tt.key, tt.max, tt.ttl); !errors.Is(err, tt.want) {
				t.Errorf("Acquire: %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := l.Renew(ctx, ratelimit.Lease{Key: "k", ID: "x"}, 0); !errors.Is(err, ratelimit.ErrInvalidLease) {
		t.Errorf("Renew with ttl 0: %v", err)
	}
	if _, err := l.Held(ctx, ""); !errors.Is(err, ratelimit.ErrInvalidKey) {
		t.Errorf("Held of empty key: %v", err)
	}
}
