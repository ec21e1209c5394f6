package ratelimit_test

import (
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailwave/mailwave/pkg/ratelimit"
	"github.com/mailwave/mailwave/pkg/testenv"
)

// clock is a hand-moved clock shared by the "replicas" of a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock {
	return &clock{t: time.Date(2026, 11, 3, 9, 0, 0, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// setup returns a Limiter on a fresh Redis, with the clock c (nil: Redis
// TIME), and the Redis client under it.
func setup(t testing.TB, c *clock) (*ratelimit.Limiter, *redis.Client) {
	t.Helper()
	rdb, _ := testenv.Redis(t)
	return ratelimit.New(rdb, options(c)), rdb
}

func options(c *clock) ratelimit.Options {
	if c == nil {
		return ratelimit.Options{}
	}
	return ratelimit.Options{Now: c.Now}
}

// replicas returns n Limiters, each on its own Redis client (its own
// connection pool) to the same server, as n sender replicas would be.
func replicas(t testing.TB, n int, c *clock) []*ratelimit.Limiter {
	t.Helper()
	_, url := testenv.Redis(t)
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*ratelimit.Limiter, n)
	for i := range out {
		rdb := redis.NewClient(opts)
		t.Cleanup(func() { _ = rdb.Close() })
		out[i] = ratelimit.New(rdb, options(c))
	}
	return out
}
