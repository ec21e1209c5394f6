// Command ispsim runs the ISP simulator of package ispsim on its own: a DNS
// server, one SMTP server per simulated mailbox provider (all on one port,
// each on its own 127.0.0.x address), the feedback IMAP mailbox, and an
// HTTP server with the ledger (/ledger) and Prometheus metrics (/metrics).
// Point a real MTA's resolver at the DNS address and its SMTP port at the
// printed port, and watch what the providers make of its mail.
//
//	ispsim -profile my-world.yaml -dns 127.0.0.1:5353 -smtp-port 2525
//
// It stops cleanly on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mailwave/mailwave/pkg/ispsim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ispsim:", err)
		os.Exit(1)
	}
}

type config struct {
	profile      string
	dnsAddr      string
	smtpPort     int
	imapAddr     string
	httpAddr     string
	routes       routeFlags
	check        bool
	printProfile bool
	verbose      bool
}

// routeFlags collects -route domain=host:port.
type routeFlags map[string]string

func (r routeFlags) String() string { return fmt.Sprint(map[string]string(r)) }

func (r routeFlags) Set(v string) error {
	for i := range len(v) {
		if v[i] == '=' {
			r[v[:i]] = v[i+1:]
			return nil
		}
	}
	return fmt.Errorf("route %q: use domain=host:port", v)
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	c := config{routes: routeFlags{}}
	fs := flag.NewFlagSet("ispsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.profile, "profile", "", "profile YAML file (default: the embedded default profile)")
	fs.StringVar(&c.dnsAddr, "dns", "127.0.0.1:5353", "DNS listen address, UDP and TCP (port 0 picks one)")
	fs.IntVar(&c.smtpPort, "smtp-port", 2525, "port every provider listens on, on its own 127.0.0.x address (0 picks one)")
	fs.StringVar(&c.imapAddr, "imap", "127.0.0.1:1143", "feedback IMAP listen address")
	fs.StringVar(&c.httpAddr, "http", "127.0.0.1:8025", "HTTP listen address for /ledger and /metrics (empty: none)")
	fs.Var(c.routes, "route", "send the simulator's DSNs and ARF reports for a domain to host:port, as domain=host:port (repeatable; domain * matches all)")
	fs.BoolVar(&c.check, "check", false, "validate the profile and exit")
	fs.BoolVar(&c.printProfile, "print-default-profile", false, "print the embedded default profile, with every knob documented, and exit")
	fs.BoolVar(&c.verbose, "v", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return c, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if c.printProfile {
		_, err := stdout.Write(ispsim.DefaultProfileYAML())
		return err
	}
	var prof *ispsim.Profile
	if c.profile == "" {
		prof, err = ispsim.DefaultProfile()
	} else {
		prof, err = ispsim.LoadProfile(c.profile)
	}
	if err != nil {
		return err
	}
	if c.check {
		fmt.Fprintf(stdout, "profile ok: %d providers\n", len(prof.Providers))
		return nil
	}
	level := slog.LevelInfo
	if c.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	sim, err := ispsim.Start(ctx, prof,
		ispsim.WithLogger(log),
		ispsim.WithDNSAddr(c.dnsAddr),
		ispsim.WithSMTPPort(c.smtpPort),
		ispsim.WithIMAPAddr(c.imapAddr))
	if err != nil {
		return err
	}
	defer sim.Close()
	for d, hp := range c.routes {
		if err := sim.SetRoute(d, hp); err != nil {
			return err
		}
	}

	var srv *http.Server
	httpErr := make(chan error, 1)
	if c.httpAddr != "" {
		ln, err := net.Listen("tcp", c.httpAddr)
		if err != nil {
			return fmt.Errorf("http listen: %w", err)
		}
		srv = &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { httpErr <- srv.Serve(ln) }()
		fmt.Fprintf(stdout, "http %s (/ledger, /metrics)\n", ln.Addr())
	}
	for _, line := range sim.Describe() {
		fmt.Fprintln(stdout, line)
	}
	for _, u := range prof.IMAP.Users {
		fmt.Fprintf(stdout, "imap user %s\n", u.Username)
	}
	fmt.Fprintln(stdout, "ready")

	select {
	case <-ctx.Done():
	case err := <-httpErr:
		return fmt.Errorf("http: %w", err)
	}
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			return fmt.Errorf("http shutdown: %w", err)
		}
	}
	return sim.Close()
}
