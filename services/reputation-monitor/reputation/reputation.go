// Package reputation is the reputation-monitor service: watches every delivery, bounce and complaint signal and decides policy changes.
package reputation

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/mailwave/mailwave/pkg/service"
)

// Config is the reputation-monitor configuration.
type Config struct {
	service.Common
}

// Validate checks the configuration; errors name the variable.
func (c *Config) Validate() error { return c.Common.Validate() }

// Run runs the service until ctx is cancelled. It connects to NATS and
// Redis, creates the topology and serves its health and metrics endpoints.
func Run(ctx context.Context, cfg Config, log *slog.Logger, opts service.Options) error {
	return service.Run(ctx, "reputation-monitor", cfg.Common, opts, log, func(context.Context, *service.Runtime) (map[string]http.Handler, func(context.Context) error, error) {
		return nil, service.Idle, nil
	})
}
