package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/mailwave/mailwave/pkg/spf"
)

// runSPF checks whether an IP may send for a sender (RFC 7208) and prints
// the result word on stdout; details go to stderr.
func runSPF(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("spf", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ipFlag := fs.String("ip", "", "the SMTP client's IP address")
	sender := fs.String("sender", "", "the MAIL FROM address (empty: check the HELO name)")
	helo := fs.String("helo", "", "the HELO/EHLO name")
	server := fs.String("dns", "", "send every DNS query to this HOST:PORT instead of the system resolver")
	timeout := fs.Duration("timeout", spf.DefaultTimeout, "DNS timeout per query with --dns")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mailwave spf --ip IP --sender ADDR [--helo NAME] [--dns HOST:PORT]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("spf: unexpected argument %q", fs.Arg(0))
	}
	ip, err := netip.ParseAddr(*ipFlag)
	if err != nil {
		fs.Usage()
		return fmt.Errorf("spf: --ip: %w", err)
	}
	if *sender == "" && *helo == "" {
		fs.Usage()
		return errors.New("spf: give --sender, or --helo to check the HELO identity")
	}
	checker := &spf.Checker{Resolver: spf.NewResolver(*server, *timeout)}
	v := checker.Check(ctx, spf.Query{IP: ip, Helo: *helo, Sender: *sender}, time.Now())
	fmt.Fprintln(stdout, v.Result)
	detail := fmt.Sprintf("spf: %s for %s at %s", v.Result, ip, v.Domain)
	if v.Term != "" {
		detail += ", matched " + v.Term
	}
	if v.Err != nil {
		detail += ": " + v.Err.Error()
	}
	fmt.Fprintln(stderr, detail)
	if v.Explanation != "" {
		fmt.Fprintln(stderr, "explanation:", v.Explanation)
	}
	return nil
}
