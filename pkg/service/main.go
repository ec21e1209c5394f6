package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/mailwave/mailwave/pkg/config"
)

// Configured is a service configuration: it validates itself and names its
// log level (Common provides LogLevelName to every Config embedding it).
type Configured interface {
	Validator
	LogLevelName() string
}

// LogLevelName returns the configured log level.
func (c *Common) LogLevelName() string { return c.LogLevel }

// Main is the body of every service's main: it loads cfg from getenv and
// args, answers -check-config, logs the configuration with secrets
// redacted, and calls start with a JSON logger on stderr.
func Main(ctx context.Context, name string, args []string, getenv func(string) string, stdout, stderr io.Writer, cfg Configured, start func(ctx context.Context, log *slog.Logger) error) error {
	err := LoadConfig(name, args, getenv, cfg)
	if errors.Is(err, ErrCheckOnly) {
		fmt.Fprintf(stdout, "%s: configuration ok: %v\n", name, config.Redacted(cfg))
		return nil
	}
	if err != nil {
		return err
	}
	log := NewLogger(stderr, cfg.LogLevelName()).With("service", name)
	log.Info("configuration", "config", config.Redacted(cfg))
	return start(ctx, log)
}

// Idle is the work of a service that only keeps its connections and
// endpoints up: it returns when ctx is cancelled.
func Idle(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
