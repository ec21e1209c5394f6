// Package service is what the five Mailwave services share at run time:
// the common configuration (NATS, Redis, HTTP, logging), the connections
// and JetStream topology they open at start, and the HTTP endpoints every
// one of them serves — /healthz, /readyz (ready only when NATS and Redis
// answer) and /metrics (Prometheus).
package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/mailwave/mailwave/pkg/config"
	"github.com/mailwave/mailwave/pkg/events"
)

// Common is the configuration every service reads.
type Common struct {
	NATSURL      string        `env:"NATS_URL" flag:"nats-url" default:"nats://127.0.0.1:4222" usage:"NATS server URL(s), comma separated"`
	NATSCreds    string        `env:"NATS_CREDS" flag:"nats-creds" usage:"path of a NATS credentials file"`
	RedisURL     string        `env:"REDIS_URL" flag:"redis-url" default:"redis://127.0.0.1:6379/0" usage:"Redis URL (redis:// or rediss://)"`
	HTTPAddr     string        `env:"MW_HTTP_ADDR" flag:"http-addr" default:":8080" usage:"listen address of /healthz, /readyz and /metrics"`
	LogLevel     string        `env:"MW_LOG_LEVEL" flag:"log-level" default:"info" usage:"debug, info, warn or error"`
	Replicas     int           `env:"MW_STREAM_REPLICAS" default:"1" usage:"replicas of JetStream streams and buckets (3 on a production cluster)"`
	DrainTimeout time.Duration `env:"MW_DRAIN_TIMEOUT" default:"25s" usage:"how long SIGTERM waits for in-flight work"`
	AckWait      time.Duration `env:"MW_ACK_WAIT" usage:"redelivery delay of a message whose consumer died (default per consumer: 1m, 2m for the sender); the same for every service"`
}

// Validate checks the common settings; errors name the variable.
func (c *Common) Validate() error {
	if c.NATSURL == "" {
		return config.Errorf("NATS_URL", "must be set")
	}
	for u := range strings.SplitSeq(c.NATSURL, ",") {
		if !strings.Contains(u, "://") {
			return config.Errorf("NATS_URL", "%q is not a URL (nats://host:4222)", u)
		}
	}
	if _, err := redis.ParseURL(c.RedisURL); err != nil {
		return config.Errorf("REDIS_URL", "%v", err)
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return config.Errorf("MW_HTTP_ADDR", "%v", err)
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		return config.Errorf("MW_LOG_LEVEL", "%v", err)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return config.Errorf("MW_STREAM_REPLICAS", "must be between 1 and 5, got %d", c.Replicas)
	}
	if c.AckWait != 0 && c.AckWait < time.Second {
		return config.Errorf("MW_ACK_WAIT", "must be at least 1s")
	}
	if c.DrainTimeout <= 0 {
		return config.Errorf("MW_DRAIN_TIMEOUT", "must be positive")
	}
	return nil
}

// ParseLevel reads a log level word.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("unknown log level %q", s)
	}
	return l, nil
}

// NewLogger returns a JSON logger at level writing to w.
func NewLogger(w io.Writer, level string) *slog.Logger {
	l, err := ParseLevel(level)
	if err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// Validator is a configuration that checks itself.
type Validator interface{ Validate() error }

// ErrCheckOnly is returned by LoadConfig when -check-config was given and
// the configuration is valid: the caller prints it and exits 0.
var ErrCheckOnly = errors.New("service: configuration checked")

// LoadConfig fills cfg from getenv and args (flags override the
// environment) and validates it. With -check-config it returns
// ErrCheckOnly after validating. Errors wrap config.ErrInvalid and name the
// field.
func LoadConfig(name string, args []string, getenv func(string) string, cfg Validator) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	check := fs.Bool("check-config", false, "validate the configuration, print it and exit")
	if err := config.Load(fs, args, getenv, cfg); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return fmt.Errorf("%s options:\n  %s", name, strings.Join(config.Describe(cfg), "\n  "))
		}
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if *check {
		return ErrCheckOnly
	}
	return nil
}

// Runtime holds the connections a service works with.
type Runtime struct {
	Name  string
	Log   *slog.Logger
	NC    *nats.Conn
	JS    jetstream.JetStream
	Redis *redis.Client
	Pub   *events.Publisher
	// Metrics is the registry /metrics serves; Metrics.Catalog lists
	// every metric registered with it.
	Metrics *Registry
	// DeadLetters counts messages the service dead-lettered, by stream.
	DeadLetters *prometheus.CounterVec
	common      Common
}

// Open connects to NATS and Redis and creates the JetStream topology. The
// caller closes the runtime with Close.
func Open(ctx context.Context, name string, c Common, log *slog.Logger) (*Runtime, error) {
	opts := []nats.Option{
		nats.Name("mailwave-" + name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	if c.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	}
	nc, err := nats.Connect(c.NATSURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("service: connect nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("service: jetstream: %w", err)
	}
	topo := events.DefaultTopology()
	topo.Replicas = c.Replicas
	topo.AckWait = c.AckWait
	if err := events.Setup(ctx, js, topo); err != nil {
		nc.Close()
		return nil, err
	}
	ropts, err := redis.ParseURL(c.RedisURL)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("service: redis url: %w", err)
	}
	rdb := redis.NewClient(ropts)
	reg := NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newQueueCollector(js, name, topo.Consumers(), log))
	dead := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailwave_dead_letters_total",
		Help: "Messages a service could not decode or process, sent to the dead-letter subject.",
	}, []string{"service", "stream"})
	reg.MustRegister(dead)
	return &Runtime{
		Name: name, Log: log, NC: nc, JS: js, Redis: rdb, Pub: events.NewPublisher(js),
		Metrics: reg, DeadLetters: dead, common: c,
	}, nil
}

// OnDead returns a callback for events.Consumer.OnDead that counts dead
// letters of stream.
func (r *Runtime) OnDead(stream string) func(subject, reason string) {
	c := r.DeadLetters.WithLabelValues(r.Name, stream)
	return func(string, string) { c.Inc() }
}

// Ready reports whether NATS and Redis answer; the error says which does not.
func (r *Runtime) Ready(ctx context.Context) error {
	if s := r.NC.Status(); s != nats.CONNECTED {
		return fmt.Errorf("nats %s", s)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := r.Redis.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

// Handler serves /healthz, /readyz and /metrics, plus extra routes.
func (r *Runtime) Handler(extra map[string]http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, req *http.Request) {
		if err := r.Ready(req.Context()); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(r.Metrics, promhttp.HandlerOpts{Registry: r.Metrics}))
	for p, h := range extra {
		mux.Handle(p, h)
	}
	return mux
}

// Close drains the NATS connection (flushing pending publishes) and closes
// Redis.
func (r *Runtime) Close() {
	_ = r.NC.Drain()
	_ = r.Redis.Close()
}

// Serve runs an HTTP server for h on addr until ctx is cancelled. ready,
// when not nil, receives the bound address once listening.
func Serve(ctx context.Context, addr string, h http.Handler, ready func(net.Addr)) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("service: listen %s: %w", addr, err)
	}
	if ready != nil {
		ready(l.Addr())
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("service: http: %w", err)
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
		return nil
	}
}
