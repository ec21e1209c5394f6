// Package testenv starts the real parts Mailwave's tests run against — an
// embedded NATS server with JetStream per test, Redis (REDIS_URL, else
// redis-server from PATH, else an in-process store), and the ISP simulator —
// all on loopback, all cleaned up by t.Cleanup. It also has the helpers
// that wait for a condition instead of sleeping.
package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/mailwave/mailwave/pkg/embedded"
	"github.com/mailwave/mailwave/pkg/events"
)

// NATS starts a NATS server with JetStream for the test, on a random
// loopback port with its store in a temporary folder.
func NATS(t testing.TB) *server.Server {
	t.Helper()
	s, err := embedded.StartNATS(embedded.NATSOptions{Dir: t.TempDir(), Port: -1, Name: "test"})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect returns a client connection to s, closed at cleanup.
func Connect(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	return ConnectURL(t, s.ClientURL())
}

// JetStream connects to s and creates the contract's topology.
func JetStream(t testing.TB, s *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc := Connect(t, s)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("testenv: jetstream: %v", err)
	}
	if err := events.Setup(Context(t), js, events.DefaultTopology()); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return nc, js
}

// Redis returns a Redis for the test by the order of embedded.StartRedis,
// with the REDIS_URL environment variable as the external choice. A test
// that gets an external Redis gets its database flushed first, so run such
// suites with -p 1 or give each package its own database.
func Redis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	r, err := embedded.StartRedis(Context(t), embedded.RedisOptions{URL: getenv("MW_TEST_REDIS_URL"), Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	opts, err := redis.ParseURL(r.URL)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	if r.Kind == embedded.RedisExternal {
		if err := c.FlushDB(Context(t)).Err(); err != nil {
			t.Fatalf("testenv: flush: %v", err)
		}
	}
	return c, r.URL
}

// Context returns a context cancelled when the test ends.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

// Eventually polls cond every few milliseconds until it returns true, and
// fails the test with msg if that does not happen within timeout.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: timed out after %s: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// ConnectURL returns a client connection to the NATS server at url, closed
// at cleanup.
func ConnectURL(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatalf("testenv: connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}
