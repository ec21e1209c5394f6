package ratelimit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/ratelimit"
	"github.com/mailwave/mailwave/pkg/testenv"
)

// TestKeeperHoldsWhileAliveAndFreesAfterACrash: a kept lease outlives its
// TTL as long as it is renewed, and lapses one TTL after its keeper stops
// (the replica died), freeing the slot for another replica.
func TestKeeperHoldsWhileAliveAndFreesAfterACrash(t *testing.T) {
	c := newClock()
	ls := replicas(t, 2, c)
	ctx := testenv.Context(t)
	const ttl = 30 * time.Second
	alive, err := ratelimit.NewKeeper(ls[0], ttl)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ratelimit.NewKeeper(ls[1], ttl)
	if err != nil {
		t.Fatal(err)
	}
	kl, g, err := alive.Acquire(ctx, "conn:127.0.0.3|google", 1)
	if err != nil || kl == nil || !g.OK {
		t.Fatalf("Acquire = %v, %+v, %v", kl, g, err)
	}
	// Three renewals carry the lease four TTLs past its first expiry.
	for range 4 {
		c.Add(ttl * 2 / 3)
		if err := alive.Renew(ctx); err != nil {
			t.Fatal(err)
		}
		if kl.Lost() || !kl.Lease().Expires.Equal(c.Now().Add(ttl)) {
			t.Fatalf("after renewal: lost %v, expires %v, want %v", kl.Lost(), kl.Lease().Expires, c.Now().Add(ttl))
		}
		if got, _, err := other.Acquire(ctx, "conn:127.0.0.3|google", 1); err != nil || got != nil {
			t.Fatalf("the other replica got the held slot: %v, %v", got, err)
		}
	}
	// The holder dies: nothing renews. Just before the TTL the slot is
	// still taken, at the TTL it is free.
	c.Add(ttl - time.Microsecond)
	if got, _, _ := other.Acquire(ctx, "conn:127.0.0.3|google", 1); got != nil {
		t.Fatal("slot freed before the TTL")
	}
	c.Add(time.Microsecond)
	got, _, err := other.Acquire(ctx, "conn:127.0.0.3|google", 1)
	if err != nil || got == nil {
		t.Fatalf("slot not freed one TTL after the last renewal: %v, %v", got, err)
	}
	// The frozen holder wakes up: its renewal finds the lease gone and
	// says so, and it no longer keeps it.
	if err := alive.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if !kl.Lost() || alive.Held() != 0 {
		t.Fatalf("lost %v, held %d", kl.Lost(), alive.Held())
	}
	if err := kl.Release(ctx); err != nil {
		t.Errorf("Release of a lost lease: %v", err)
	}
	if n, _ := ls[1].Held(ctx, "conn:127.0.0.3|google"); n != 1 {
		t.Errorf("the new holder's lease was disturbed: held %d", n)
	}
	// Release frees at once, and twice is harmless.
	if err := got.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := got.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := ls[1].Held(ctx, "conn:127.0.0.3|google"); n != 0 || other.Held() != 0 {
		t.Errorf("after release: %d in Redis, %d kept", n, other.Held())
	}
}

// TestKeeperRunOnRedisTime runs the renewal loop on the Redis server's own
// clock with a short TTL: the lease stays held for many TTLs while Run
// runs and frees itself soon after Run stops.
func TestKeeperRunOnRedisTime(t *testing.T) {
	l, _ := setup(t, nil)
	ctx := testenv.Context(t)
	const ttl = 900 * time.Millisecond
	k, err := ratelimit.NewKeeper(l, ttl)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); k.Run(runCtx) }()
	kl, _, err := k.Acquire(ctx, "k", 2)
	if err != nil || kl == nil {
		t.Fatal(kl, err)
	}
	for start := time.Now(); time.Since(start) < 3*ttl; {
		if n, err := l.Held(ctx, "k"); err != nil || n != 1 || kl.Lost() {
			t.Fatalf("%s after acquiring: held %d, %v, lost %v", time.Since(start), n, err, kl.Lost())
		}
		time.Sleep(ttl / 10) // sampling the state while time passes, not waiting for it
	}
	stop()
	<-done
	testenv.Eventually(t, 5*time.Second, func() bool {
		n, err := l.Held(ctx, "k")
		return err == nil && n == 0
	}, "the lease outlived its stopped keeper")
}

func TestKeeperRejectsTinyTTL(t *testing.T) {
	l, _ := setup(t, nil)
	if _, err := ratelimit.NewKeeper(l, time.Millisecond); !errors.Is(err, ratelimit.ErrInvalidLease) {
		t.Fatalf("NewKeeper(1ms) = %v", err)
	}
}
