// Command fbl-parser reads spam complaints from feedback mailboxes and the FBL
// address and acts on them. See package fblparser for what it does; this file
// only wires it.
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
	"github.com/mailwave/mailwave/services/fbl-parser/fblparser"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fbl-parser:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	// Mailbox passwords named by password_env are read from the same
	// environment as the rest of the configuration.
	cfg := fblparser.Config{Getenv: getenv}
	return service.Main(ctx, "fbl-parser", args, getenv, stdout, stderr, &cfg, func(ctx context.Context, log *slog.Logger) error {
		return fblparser.Run(ctx, cfg, log, service.Options{})
	})
}
