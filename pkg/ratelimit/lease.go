package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lease is one held slot of a key: one SMTP connection of a source IP to a
// provider, say. It is a value; keep it to renew and release the slot.
type Lease struct {
	// Key is the caller's key the lease belongs to.
	Key string
	// ID tells this lease from the others of its key (32 hex digits).
	ID string
	// Expires is when the lease lapses unless renewed, by the clock the
	// scripts use (Redis TIME unless Options.Now is set).
	Expires time.Time
}

// Grant is the answer to Acquire.
type Grant struct {
	// OK reports whether a lease was granted; Lease is valid only then.
	OK    bool
	Lease Lease
	// Held is the number of unexpired leases of the key after the call.
	Held int
	// RetryAfter is, when refused, the time until the oldest lease
	// expires: the latest moment a slot frees up by itself (a release
	// frees one sooner). 0 when granted.
	RetryAfter time.Duration
}

// Acquire takes one of at most max concurrent leases of key for ttl. It
// never waits: when all max are held it answers at once with OK false. max
// is given per call, so a policy change applies at once (a lower max
// refuses new leases until enough are released). Errors wrap
// ErrInvalidKey, ErrInvalidLease or ErrReply, or are Redis errors.
func (l *Limiter) Acquire(ctx context.Context, key string, max int, ttl time.Duration) (Grant, error) {
	if err := checkKey(key); err != nil {
		return Grant{}, err
	}
	if max < 1 || ttl < time.Millisecond {
		return Grant{}, fmt.Errorf("%w: max %d, ttl %s", ErrInvalidLease, max, ttl)
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Grant{}, fmt.Errorf("ratelimit: lease id: %w", err)
	}
	id := hex.EncodeToString(b[:])
	v, err := acquireScript.Run(ctx, l.rdb, []string{l.leaseKey(key)}, l.nowArg(), max, ttl.Microseconds(), id).Result()
	if err != nil {
		return Grant{}, fmt.Errorf("ratelimit: %s: %w", key, err)
	}
	r, err := ints(v, 3)
	if err != nil {
		return Grant{}, err
	}
	if r[0] == 0 {
		return Grant{Held: int(r[1]), RetryAfter: time.Duration(r[2]) * time.Microsecond}, nil
	}
	return Grant{OK: true, Held: int(r[1]), Lease: Lease{Key: key, ID: id, Expires: time.UnixMicro(r[2])}}, nil
}

// Renew extends a held lease to ttl from now and returns it with its new
// expiry. It returns an error wrapping ErrLeaseLost when the lease had
// already expired or been released: the caller must then stop using the
// slot (close the connection) and acquire again.
func (l *Limiter) Renew(ctx context.Context, lease Lease, ttl time.Duration) (Lease, error) {
	if err := checkKey(lease.Key); err != nil {
		return Lease{}, err
	}
	if ttl < time.Millisecond {
		return Lease{}, fmt.Errorf("%w: ttl %s", ErrInvalidLease, ttl)
	}
	v, err := renewScript.Run(ctx, l.rdb, []string{l.leaseKey(lease.Key)}, l.nowArg(), ttl.Microseconds(), lease.ID).Result()
	if err != nil {
		return Lease{}, fmt.Errorf("ratelimit: %s: %w", lease.Key, err)
	}
	r, err := ints(v, 2)
	if err != nil {
		return Lease{}, err
	}
	if r[0] == 0 {
		return Lease{}, fmt.Errorf("%w: %s %s", ErrLeaseLost, lease.Key, lease.ID)
	}
	lease.Expires = time.UnixMicro(r[1])
	return lease, nil
}

// Release gives the lease's slot back. It returns an error wrapping
// ErrLeaseLost when the lease was no longer held (it had expired, or was
// released twice); the slot is free either way.
func (l *Limiter) Release(ctx context.Context, lease Lease) error {
	if err := checkKey(lease.Key); err != nil {
		return err
	}
	n, err := l.rdb.ZRem(ctx, l.leaseKey(lease.Key), lease.ID).Result()
	if err != nil {
		return fmt.Errorf("ratelimit: %s: %w", lease.Key, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: %s %s", ErrLeaseLost, lease.Key, lease.ID)
	}
	return nil
}

// Held returns the number of unexpired leases of key.
func (l *Limiter) Held(ctx context.Context, key string) (int, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	n, err := heldScript.Run(ctx, l.rdb, []string{l.leaseKey(key)}, l.nowArg()).Int()
	if err != nil {
		return 0, fmt.Errorf("ratelimit: %s: %w", key, err)
	}
	return n, nil
}

func (l *Limiter) leaseKey(key string) string { return l.prefix + "lease:" + key }

// Every script of the package starts with scriptClock, which reads the
// clock (ARGV[1]: µs, or "" for Redis TIME). The lease scripts then share
// an epilogue that keeps the set alive exactly as long as its longest
// lease (on the Redis clock only: Redis expires keys by its own clock,
// which an injected one does not follow).
const scriptClock = `
local now = tonumber(ARGV[1])
local injected = now ~= nil
if not injected then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
`

const leaseKeepAlive = `
local function keepalive()
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if last[2] and not injected then
    redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.max(1, math.ceil((tonumber(last[2]) - now) / 1000))))
  end
end
`

// acquireScript: ARGV[2] max, ARGV[3] ttl µs, ARGV[4] lease id. Returns
// {1, held, expiry µs} or {0, held, µs until the oldest lease expires}.
var acquireScript = redis.NewScript(scriptClock + leaseKeepAlive + `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
local held = redis.call('ZCARD', KEYS[1])
if held >= tonumber(ARGV[2]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, held, tonumber(first[2]) - now}
end
local exp = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], string.format('%.0f', exp), ARGV[4])
keepalive()
return {1, held + 1, exp}
`)

// renewScript: ARGV[2] ttl µs, ARGV[3] lease id. Returns {1, expiry µs} or
// {0, 0} when the lease is gone.
var renewScript = redis.NewScript(scriptClock + leaseKeepAlive + `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  return {0, 0}
end
local exp = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', string.format('%.0f', exp), ARGV[3])
keepalive()
return {1, exp}
`)

// heldScript counts the unexpired leases without changing anything.
var heldScript = redis.NewScript(scriptClock + `
return redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%.0f', now), '+inf')
`)
