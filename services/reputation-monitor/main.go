// Command reputation-monitor watches every delivery, bounce and complaint
// signal and decides policy changes. See package reputation for what it does;
// this file only wires it.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/services/reputation-monitor/reputation"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "reputation-monitor:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var cfg reputation.Config
	return service.Main(ctx, "reputation-monitor", args, getenv, stdout, stderr, &cfg, func(ctx context.Context, log *slog.Logger) error {
		return reputation.Run(ctx, cfg, log, service.Options{})
	})
}
