package service_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/config"
	"github.com/mailwave/mailwave/pkg/embedded"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/testenv"
)

type cfg struct {
	service.Common
}

func (c *cfg) Validate() error { return c.Common.Validate() }

func TestConfigErrorsNameTheField(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"NATS_URL": "localhost:4222"}, "NATS_URL"},
		{map[string]string{"REDIS_URL": "mysql://x"}, "REDIS_URL"},
		{map[string]string{"MW_HTTP_ADDR": "8080"}, "MW_HTTP_ADDR"},
		{map[string]string{"MW_LOG_LEVEL": "loud"}, "MW_LOG_LEVEL"},
		{map[string]string{"MW_STREAM_REPLICAS": "7"}, "MW_STREAM_REPLICAS"},
		{map[string]string{"MW_DRAIN_TIMEOUT": "soon"}, "MW_DRAIN_TIMEOUT"},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			var c cfg
			err := service.LoadConfig("t", nil, func(k string) string { return tc.env[k] }, &c)
			if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %s", err, tc.want)
			}
		})
	}
	var c cfg
	if err := service.LoadConfig("t", []string{"-check-config"}, func(string) string { return "" }, &c); !errors.Is(err, service.ErrCheckOnly) {
		t.Fatalf("check-config: %v", err)
	}
}

func TestReadyzFollowsNATSAndRedis(t *testing.T) {
	ns := testenv.NATS(t)
	ctx := testenv.Context(t)
	r, err := embedded.StartRedis(ctx, embedded.RedisOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	c := service.Common{NATSURL: ns.ClientURL(), RedisURL: r.URL, HTTPAddr: "127.0.0.1:0", LogLevel: "info",
		Replicas: 1, DrainTimeout: 5 * time.Second}
	addrc := make(chan net.Addr, 1)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- service.Run(runCtx, "t", c, service.Options{OnListen: func(a net.Addr) { addrc <- a }},
			slog.New(slog.DiscardHandler), func(context.Context, *service.Runtime) (map[string]http.Handler, func(context.Context) error, error) {
				return nil, service.Idle, nil
			})
	}()
	addr := (<-addrc).String()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { code, _ := get("/readyz"); return code == 200 }, "never ready")
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("metrics %d", code)
	}
	// Redis gone: not ready, and the reason says so; alive all the same.
	_ = r.Close()
	testenv.Eventually(t, 10*time.Second, func() bool {
		code, body := get("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "redis")
	}, "still ready without Redis")
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("healthz %d without redis", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}
