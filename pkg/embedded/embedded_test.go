package embedded_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailwave/mailwave/pkg/embedded"
	"github.com/mailwave/mailwave/pkg/testenv"
)

func TestInMemoryRedisKeysExpire(t *testing.T) {
	ctx := testenv.Context(t)
	r, err := embedded.StartRedis(ctx, embedded.RedisOptions{NoServer: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Kind != embedded.RedisInMemory {
		t.Fatalf("kind %s", r.Kind)
	}
	expireCheck(ctx, t, r.URL)
}

func TestRedisServerFromPath(t *testing.T) {
	ctx := testenv.Context(t)
	r, err := embedded.StartRedis(ctx, embedded.RedisOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Kind != embedded.RedisServer {
		t.Skipf("redis-server not on PATH (got %s); CI installs it", r.Kind)
	}
	expireCheck(ctx, t, r.URL)
}

// make run keeps its data under a relative folder (.data/redis): the
// server must start there too.
func TestRedisServerInRelativeFolder(t *testing.T) {
	t.Chdir(t.TempDir())
	ctx := testenv.Context(t)
	r, err := embedded.StartRedis(ctx, embedded.RedisOptions{Dir: filepath.Join(".data", "redis")})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Kind != embedded.RedisServer {
		t.Skipf("redis-server not on PATH (got %s); CI installs it", r.Kind)
	}
	expireCheck(ctx, t, r.URL)
}

func expireCheck(ctx context.Context, t *testing.T, url string) {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 200*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	if v, _ := c.Get(ctx, "k").Result(); v != "v" {
		t.Fatalf("get %q", v)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		return c.Exists(ctx, "k").Val() == 0
	}, "key with a 200ms TTL still there")
}

func TestExternalRedisIsUsedAsIs(t *testing.T) {
	r, err := embedded.StartRedis(context.Background(), embedded.RedisOptions{URL: "redis://example:6379/1"})
	if err != nil || r.Kind != embedded.RedisExternal || r.URL != "redis://example:6379/1" {
		t.Fatalf("%+v %v", r, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNATSWithJetStream(t *testing.T) {
	s, err := embedded.StartNATS(embedded.NATSOptions{Dir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.WaitForShutdown()
	defer s.Shutdown()
	if !s.JetStreamEnabled() {
		t.Fatal("jetstream disabled")
	}
}
