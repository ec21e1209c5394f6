package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/mailwave/mailwave/pkg/authaudit"
	"github.com/mailwave/mailwave/pkg/spf"
)

// errDoctorFailed is returned when the audit found problems, so that the
// exit status tells scripts.
var errDoctorFailed = errors.New("doctor: checks failed")

// runDoctor audits how receivers can authenticate a sending domain and
// prints the problems and the records to publish.
func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ips := fs.String("ips", "", "comma-separated IPs of the domain's pool")
	selector := fs.String("selector", "", "DKIM selector")
	keyPath := fs.String("dkim-key", "", "PEM file of the DKIM private key (PKCS #8 or PKCS #1)")
	bounce := fs.String("bounce-domain", "", "return-path domain (default: DOMAIN)")
	ehlo := fs.String("ehlo", "", "the name the pool's IPs greet with")
	server := fs.String("dns", "", "send every DNS query to this HOST:PORT instead of the system resolver")
	timeout := fs.Duration("timeout", spf.DefaultTimeout, "DNS timeout per query with --dns")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mailwave doctor DOMAIN [--ips IP,...] [--selector S] [--dkim-key PATH] [--bounce-domain D] [--ehlo NAME] [--dns HOST:PORT] [--json]")
		fs.PrintDefaults()
	}
	// The domain may stand before, between or after the flags.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(positional) != 1 {
		fs.Usage()
		return errors.New("doctor: give exactly one DOMAIN")
	}
	req := authaudit.Request{
		Domain:       positional[0],
		Selector:     *selector,
		BounceDomain: *bounce,
		EHLO:         *ehlo,
	}
	for _, s := range strings.Split(*ips, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("doctor: --ips: %w", err)
		}
		req.IPs = append(req.IPs, ip)
	}
	if *keyPath != "" {
		pemBytes, err := os.ReadFile(*keyPath)
		if err != nil {
			return fmt.Errorf("doctor: %w", err)
		}
		if req.DKIMKey, err = authaudit.ParsePrivateKey(pemBytes); err != nil {
			return fmt.Errorf("doctor: %s: %w", *keyPath, err)
		}
	}
	auditor := &authaudit.Auditor{Resolver: spf.NewResolver(*server, *timeout)}
	rep, err := auditor.Audit(ctx, req, time.Now())
	if err != nil {
		return fmt.Errorf("doctor: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printReport(stdout, rep)
	}
	failed := 0
	for _, c := range rep.Checks {
		if !c.OK {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%w: %d of %d", errDoctorFailed, failed, len(rep.Checks))
	}
	return nil
}

// printReport writes the report for a person.
func printReport(w io.Writer, rep authaudit.Report) {
	fmt.Fprintf(w, "Authentication of %s\n", rep.Domain)
	for _, c := range rep.Checks {
		status := "ok"
		if !c.OK {
			status = "PROBLEM"
		}
		fmt.Fprintf(w, "\n%-6s %s\n", c.Name, status)
		for _, p := range c.Problems {
			fmt.Fprintf(w, "  - %s\n", p)
		}
		if c.Fix != "" {
			fmt.Fprintln(w, "  publish:")
			for _, line := range strings.Split(c.Fix, "\n") {
				fmt.Fprintf(w, "    %s\n", line)
			}
		}
	}
}
