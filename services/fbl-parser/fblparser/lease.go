package fblparser

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// Lease lets one replica at a time read a feedback mailbox. Two readers
// of one mailbox would lose nothing (a report stored twice is kept once),
// but would race to move the same messages and fail each other's
// sessions. The lease is a Redis key holding the holder's name with a
// TTL that the holder renews; a replica that dies lets it expire and
// another takes over within TTL.
type Lease struct {
	Redis *redis.Client
	// Key is the lease's Redis key (LeaseKey).
	Key string
	// Holder names this replica.
	Holder string
	// TTL is how long the lease outlives its last renewal (default 30s).
	TTL time.Duration
}

// LeaseKey is the Redis key of a mailbox's lease.
func LeaseKey(mailbox string) string { return "mw:fbl:lease:" + mailwavev1.KeyToken(mailbox) }

func (l *Lease) ttl() time.Duration {
	if l.TTL <= 0 {
		return 30 * time.Second
	}
	return l.TTL
}

// leaseScript takes or renews the lease: KEYS[1] the lease, ARGV[1] the
// holder, ARGV[2] the TTL in milliseconds. It returns 1 when the caller
// holds the lease afterwards.
var leaseScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if v then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Acquire takes the lease, or renews it when this holder has it. It
// reports whether the holder has it now.
func (l *Lease) Acquire(ctx context.Context) (bool, error) {
	n, err := leaseScript.Run(ctx, l.Redis, []string{l.Key}, l.Holder, l.ttl().Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("fblparser: lease %s: %w", l.Key, err)
	}
	return n == 1, nil
}

// Release gives the lease up when this holder has it.
func (l *Lease) Release(ctx context.Context) error {
	if err := releaseScript.Run(ctx, l.Redis, []string{l.Key}, l.Holder).Err(); err != nil {
		return fmt.Errorf("fblparser: lease %s: %w", l.Key, err)
	}
	return nil
}
