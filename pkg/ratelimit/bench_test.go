package ratelimit_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailwave/mailwave/pkg/embedded"
	"github.com/mailwave/mailwave/pkg/ratelimit"
)

// benchLimiter returns a Limiter on a real redis-server on the Redis clock,
// as in production. The in-process store would measure gopher-lua instead.
func benchLimiter(b *testing.B) (*ratelimit.Limiter, *redis.Client) {
	b.Helper()
	r, err := embedded.StartRedis(context.Background(), embedded.RedisOptions{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close() })
	if r.Kind != embedded.RedisServer {
		b.Skip("no redis-server on PATH")
	}
	opts, err := redis.ParseURL(r.URL)
	if err != nil {
		b.Fatal(err)
	}
	opts.PoolSize = 64
	rdb := redis.NewClient(opts)
	b.Cleanup(func() { _ = rdb.Close() })
	return ratelimit.New(rdb, ratelimit.Options{}), rdb
}

// benchWindows are one window, and a message check as the sender makes it
// (per second, minute and hour); high enough that every request passes
// (the path that writes).
var benchWindows = map[string][]ratelimit.Window{
	"windows=1": {ratelimit.Rate(1e6, time.Second)},
	"windows=3": {ratelimit.Rate(1e6, time.Second), ratelimit.Rate(6e7, time.Minute), ratelimit.Rate(3.6e9, time.Hour)},
}

// eachWindows runs bench for one window and for three, in that order.
func eachWindows(b *testing.B, bench func(b *testing.B, windows []ratelimit.Window)) {
	for _, name := range []string{"windows=1", "windows=3"} {
		b.Run(name, func(b *testing.B) { bench(b, benchWindows[name]) })
	}
}

func benchKeys() []string {
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = "src:127.0.0." + strconv.Itoa(i) + "|prov:google"
	}
	return keys
}

// reportRate reports requests per second, and the server's own time per
// script call from INFO commandstats (what a faster network cannot buy).
func reportRate(b *testing.B, rdb *redis.Client) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if !strings.HasPrefix(line, "cmdstat_evalsha:") {
			continue
		}
		for _, f := range strings.Split(strings.TrimPrefix(line, "cmdstat_evalsha:"), ",") {
			if v, ok := strings.CutPrefix(f, "usec_per_call="); ok {
				if x, err := strconv.ParseFloat(v, 64); err == nil {
					b.ReportMetric(x, "server-µs/call")
				}
			}
		}
	}
}

// BenchmarkAllow: one EVALSHA per request, one after the other.
func BenchmarkAllow(b *testing.B) {
	eachWindows(b, func(b *testing.B, windows []ratelimit.Window) {
		l, rdb := benchLimiter(b)
		ctx := context.Background()
		keys := benchKeys()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			r, err := l.Allow(ctx, keys[i%len(keys)], 1, windows...)
			if err != nil || !r.Allowed {
				b.Fatalf("%+v, %v", r, err)
			}
		}
		reportRate(b, rdb)
	})
}

// BenchmarkAllowParallel: 16 goroutines per CPU, as sender workers would
// call Allow.
func BenchmarkAllowParallel(b *testing.B) {
	eachWindows(b, func(b *testing.B, windows []ratelimit.Window) {
		l, rdb := benchLimiter(b)
		ctx := context.Background()
		keys := benchKeys()
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				r, err := l.Allow(ctx, keys[i%len(keys)], 1, windows...)
				if err != nil || !r.Allowed {
					b.Errorf("%+v, %v", r, err)
					return
				}
			}
		})
		reportRate(b, rdb)
	})
}

// BenchmarkAllowBatch: requests in pipelined batches of 100; one op is one
// request.
func BenchmarkAllowBatch(b *testing.B) {
	eachWindows(b, func(b *testing.B, windows []ratelimit.Window) {
		l, rdb := benchLimiter(b)
		ctx := context.Background()
		keys := benchKeys()
		batch := make([]ratelimit.Request, 100)
		for i := range batch {
			batch[i] = ratelimit.Request{Key: keys[i%len(keys)], N: 1, Windows: windows}
		}
		b.ResetTimer()
		for done := 0; done < b.N; done += len(batch) {
			reqs := batch[:min(len(batch), b.N-done)]
			res, err := l.AllowBatch(ctx, reqs)
			if err != nil {
				b.Fatal(err)
			}
			for _, r := range res {
				if !r.Allowed {
					b.Fatalf("refused: %+v", r)
				}
			}
		}
		reportRate(b, rdb)
	})
}
