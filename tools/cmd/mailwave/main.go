// Command mailwave is the operator's command line for Mailwave: it classifies
// bounce and complaint messages, checks SPF and the authentication records of
// sending domains, and records manual policy changes.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command runs one subcommand with its own arguments.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() map[string]command {
	return map[string]command{
		// Each subcommand lives in its own file and adds one line here.
		"spf":      {"check whether an IP may send for an address (RFC 7208)", runSPF},
		"doctor":   {"audit SPF, DKIM, DMARC, reverse DNS and MX of a sending domain", runDoctor},
		"classify": {"say what bounce, complaint and reply messages are and why delivery failed", runClassify},
		"rules":    {"check SMTP response rules, or dry-run them on one answer", runRules},
		"policy":   {"pause, resume or pin a rate by hand, or list the current policies", runPolicy},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mailwave:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return fmt.Errorf("no command given")
		}
		return nil
	}
	c, ok := cmds[args[0]]
	if !ok {
		usage(stderr, cmds)
		return fmt.Errorf("unknown command %q", args[0])
	}
	return c.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "usage: mailwave COMMAND [options]")
	fmt.Fprintln(w, "commands:")
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
}
