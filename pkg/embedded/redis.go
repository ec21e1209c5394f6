package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Redis kinds, in the order StartRedis prefers them.
const (
	RedisExternal = "external"
	RedisServer   = "redis-server"
	RedisInMemory = "in-process"
)

// ErrRedisNotReady is returned when a started redis-server does not answer.
var ErrRedisNotReady = errors.New("embedded: redis-server not ready")

// Redis is a Redis the caller can connect to.
type Redis struct {
	// URL is a redis:// URL for go-redis ParseURL.
	URL string
	// Kind is RedisExternal, RedisServer or RedisInMemory.
	Kind  string
	close func() error
}

// Close stops what StartRedis started; it leaves an external Redis alone.
func (r *Redis) Close() error {
	if r.close == nil {
		return nil
	}
	return r.close()
}

// RedisOptions configures StartRedis.
type RedisOptions struct {
	// URL of an existing Redis; when set nothing is started.
	URL string
	// Dir is where a started redis-server keeps its files.
	Dir string
	// NoServer skips looking for redis-server on PATH.
	NoServer bool
}

// StartRedis returns a Redis by order of preference: the URL given; else a
// redis-server from PATH started on a free loopback port; else an
// in-process store (miniredis) whose clock advances with real time, so keys
// with a TTL really expire. It returns ErrRedisNotReady when a started
// redis-server does not answer PING within ten seconds.
func StartRedis(ctx context.Context, o RedisOptions) (*Redis, error) {
	if o.URL != "" {
		return &Redis{URL: o.URL, Kind: RedisExternal}, nil
	}
	if !o.NoServer {
		if path, err := exec.LookPath("redis-server"); err == nil {
			return startRedisServer(ctx, path, o.Dir)
		}
	}
	return startInMemory()
}

func startRedisServer(ctx context.Context, path, dir string) (*Redis, error) {
	if dir == "" {
		d, err := os.MkdirTemp("", "mailwave-redis-")
		if err != nil {
			return nil, fmt.Errorf("embedded: redis dir: %w", err)
		}
		dir = d
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("embedded: redis dir: %w", err)
	}
	// The port is chosen by binding to :0 and releasing it; redis-server has
	// no way to report a port it picked itself. A lost race shows as a
	// failed start, which is retried on a new port.
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		r, err := runRedisServer(ctx, path, dir, port)
		if err == nil {
			return r, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func runRedisServer(ctx context.Context, path, dir string, port int) (*Redis, error) {
	// redis-server changes into --dir before it opens --logfile, so a
	// relative folder (make run's .data/redis) would name the log twice
	// over and stop the server at start.
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("embedded: redis folder: %w", err)
	}
	// exec.Command, not CommandContext: the server must outlive the start
	// context and stop only on Close.
	cmd := exec.Command(path,
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--logfile", filepath.Join(dir, "redis.log"),
	)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("embedded: start redis-server: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	url := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	client := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1})
	defer client.Close()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := client.Ping(ctx).Err(); err == nil {
			break
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("%w: exited: %v (log in %s)", ErrRedisNotReady, err, dir)
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			<-exited
			return nil, ctx.Err()
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return nil, ErrRedisNotReady
		}
	}
	var once sync.Once
	return &Redis{URL: url, Kind: RedisServer, close: func() error {
		once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		})
		return nil
	}}, nil
}

func startInMemory() (*Redis, error) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("embedded: in-process redis: %w", err)
	}
	// miniredis expires keys only when its clock is moved: advance it with
	// real time so TTLs behave as on a real server.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		last := time.Now()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				m.SetTime(now)
				m.FastForward(now.Sub(last))
				last = now
			}
		}
	}()
	var once sync.Once
	return &Redis{URL: "redis://" + m.Addr() + "/0", Kind: RedisInMemory, close: func() error {
		once.Do(func() {
			close(stop)
			<-done
			m.Close()
		})
		return nil
	}}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("embedded: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
