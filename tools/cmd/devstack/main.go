// Command devstack is `make run`: the whole platform on one machine — an
// embedded NATS server, Redis, the ISP simulator and all five services in
// one process. It sends a small demo batch, prints what happened to each
// message and per provider, and runs until Ctrl-C.
//
// NATS_URL and REDIS_URL point it at external servers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

type options struct {
	dataDir  string
	profile  string
	demo     bool
	exit     bool
	logLevel string
	timeout  time.Duration
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devstack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.dataDir, "data", ".data", "folder for the embedded NATS store and redis-server files")
	fs.StringVar(&o.profile, "profile", "", "ISP simulator profile (YAML); default: the built-in profile")
	fs.BoolVar(&o.demo, "demo", true, "send the demo batch and print its outcome")
	fs.BoolVar(&o.exit, "exit", false, "exit after the demo instead of running until Ctrl-C")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log level of the services (logs go to stderr)")
	fs.DurationVar(&o.timeout, "demo-timeout", 60*time.Second, "how long to wait for the demo's outcomes")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	return runPlatform(ctx, o, getenv, stdout, stderr)
}
