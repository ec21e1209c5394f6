// Command sender delivers dispatch messages over SMTP. See package sender
// for what it does; this file only wires it.
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
	"github.com/mailwave/mailwave/services/sender/sender"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sender:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var cfg sender.Config
	return service.Main(ctx, "sender", args, getenv, stdout, stderr, &cfg, func(ctx context.Context, log *slog.Logger) error {
		return sender.Run(ctx, cfg, log, service.Options{})
	})
}
