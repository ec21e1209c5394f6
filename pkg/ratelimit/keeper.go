package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Keeper keeps leases alive for as long as their holders do. A lease
// expires after a short TTL unless renewed; the Keeper renews every lease
// it holds, all in one pipelined round trip, every third of the TTL. So a
// replica that dies holding connection slots frees them within one TTL,
// while a live SMTP session keeps its slot however long it lasts, busy or
// idle.
//
// Run does the renewing; a Keeper whose Run is not running (its process
// froze or died) lets its leases lapse, which is the point.
type Keeper struct {
	l   *Limiter
	ttl time.Duration

	mu   sync.Mutex
	kept map[*Kept]struct{}
}

// Kept is one lease held by a Keeper.
type Kept struct {
	k *Keeper

	mu       sync.Mutex
	lease    Lease
	lost     bool
	released bool
}

// NewKeeper returns a Keeper whose leases live ttl past their last
// renewal. ttl must be at least 3ms (it is renewed every ttl/3).
func NewKeeper(l *Limiter, ttl time.Duration) (*Keeper, error) {
	if ttl < 3*time.Millisecond {
		return nil, fmt.Errorf("%w: keeper ttl %s", ErrInvalidLease, ttl)
	}
	return &Keeper{l: l, ttl: ttl, kept: map[*Kept]struct{}{}}, nil
}

// TTL returns the leases' time to live past a renewal.
func (k *Keeper) TTL() time.Duration { return k.ttl }

// Acquire takes one of at most max leases of key, as Limiter.Acquire, and
// keeps it alive until Release. It returns nil and the refusal when no
// slot is free.
func (k *Keeper) Acquire(ctx context.Context, key string, max int) (*Kept, Grant, error) {
	g, err := k.l.Acquire(ctx, key, max, k.ttl)
	if err != nil || !g.OK {
		return nil, g, err
	}
	kl := &Kept{k: k, lease: g.Lease}
	k.mu.Lock()
	k.kept[kl] = struct{}{}
	k.mu.Unlock()
	return kl, g, nil
}

// Held returns the number of leases the Keeper keeps.
func (k *Keeper) Held() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.kept)
}

// Run renews the kept leases every TTL/3 until ctx ends. A lease found
// expired is marked lost and no longer kept; a Redis error is retried at
// the next tick (a lease survives two missed renewals).
func (k *Keeper) Run(ctx context.Context) {
	t := time.NewTicker(k.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = k.Renew(ctx)
		}
	}
}

// Renew renews every kept lease now, in one pipelined round trip. Leases
// that had expired are marked lost (Kept.Lost) and dropped. It returns
// the Redis error, if any; the leases it could not renew stay kept.
func (k *Keeper) Renew(ctx context.Context) error {
	k.mu.Lock()
	all := make([]*Kept, 0, len(k.kept))
	for kl := range k.kept {
		all = append(all, kl)
	}
	k.mu.Unlock()
	if len(all) == 0 {
		return nil
	}
	leases := make([]Lease, len(all))
	for i, kl := range all {
		leases[i] = kl.Lease()
	}
	renewed, err := k.l.renewBatch(ctx, leases, k.ttl)
	for i, kl := range all {
		switch {
		case renewed[i].err == nil && renewed[i].ok:
			kl.mu.Lock()
			kl.lease.Expires = renewed[i].expires
			kl.mu.Unlock()
		case renewed[i].err == nil:
			kl.mu.Lock()
			kl.lost = true
			kl.mu.Unlock()
			k.forget(kl)
		}
	}
	return err
}

func (k *Keeper) forget(kl *Kept) {
	k.mu.Lock()
	delete(k.kept, kl)
	k.mu.Unlock()
}

// Lease returns the lease as last renewed.
func (kl *Kept) Lease() Lease {
	kl.mu.Lock()
	defer kl.mu.Unlock()
	return kl.lease
}

// Lost reports whether the lease expired before it could be renewed (Redis
// unreachable for a whole TTL, or the process frozen): its slot may belong
// to someone else, so its holder must stop using it (close the
// connection).
func (kl *Kept) Lost() bool {
	kl.mu.Lock()
	defer kl.mu.Unlock()
	return kl.lost
}

// Release stops keeping the lease and gives its slot back. Releasing
// twice, or a lost lease, is not an error: the slot is free either way.
func (kl *Kept) Release(ctx context.Context) error {
	kl.mu.Lock()
	done := kl.released || kl.lost
	kl.released = true
	lease := kl.lease
	kl.mu.Unlock()
	kl.k.forget(kl)
	if done {
		return nil
	}
	if err := kl.k.l.Release(ctx, lease); err != nil && !errors.Is(err, ErrLeaseLost) {
		return err
	}
	return nil
}

type renewal struct {
	ok      bool
	expires time.Time
	err     error
}

// renewBatch renews leases in one pipeline of EVALSHA calls, loading the
// script once when Redis lost it (a restart). A Redis error leaves the
// entries it concerns with their error set.
func (l *Limiter) renewBatch(ctx context.Context, leases []Lease, ttl time.Duration) ([]renewal, error) {
	out := make([]renewal, len(leases))
	pending := make([]int, len(leases))
	for i := range leases {
		pending[i] = i
	}
	now := l.nowArg()
	var firstErr error
	for try := 0; len(pending) > 0; try++ {
		cmds := make([]*redis.Cmd, len(pending))
		_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j, i := range pending {
				cmds[j] = renewScript.EvalSha(ctx, p, []string{l.leaseKey(leases[i].Key)}, now, ttl.Microseconds(), leases[i].ID)
			}
			return nil
		})
		if err != nil && !isNoScript(err) && firstErr == nil {
			firstErr = fmt.Errorf("ratelimit: renew: %w", err)
		}
		var again []int
		for j, i := range pending {
			v, err := cmds[j].Result()
			if isNoScript(err) && try == 0 {
				again = append(again, i)
				continue
			}
			if err != nil {
				out[i].err = err
				continue
			}
			r, err := ints(v, 2)
			if err != nil {
				out[i].err = err
				continue
			}
			out[i] = renewal{ok: r[0] == 1, expires: time.UnixMicro(r[1])}
		}
		if len(again) > 0 {
			if err := renewScript.Load(ctx, l.rdb).Err(); err != nil {
				for _, i := range again {
					out[i].err = err
				}
				return out, fmt.Errorf("ratelimit: load script: %w", err)
			}
		}
		pending = again
	}
	return out, firstErr
}
