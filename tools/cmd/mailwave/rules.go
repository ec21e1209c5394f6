package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/mailwave/mailwave/pkg/response"
)

// runRules is `mailwave rules`: check a response-rules file, or dry-run
// the rules on one SMTP answer, as the sender would decide it.
//
//	mailwave rules check [FILE]
//	mailwave rules classify [--rules FILE] [--phase rcpt] [--provider google]
//	    [--sending-domain D] [--recipient-domain D] [--json] "550 5.1.1 text..."
func runRules(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("rules: want check or classify")
	}
	switch args[0] {
	case "check":
		if len(args) > 2 {
			return errors.New("rules check: at most one file")
		}
		if len(args) == 1 {
			response.Default()
			fmt.Fprintln(stdout, "shipped rules: ok")
			return nil
		}
		if _, err := response.Load(args[1]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: ok\n", args[1])
		return nil
	case "classify":
		return rulesClassify(args[1:], stdout, stderr)
	default:
		return fmt.Errorf("rules: unknown subcommand %q (want check or classify)", args[0])
	}
}

var replyRE = regexp.MustCompile(`^([245]\d\d)[ -]?(?:([245]\.\d{1,3}\.\d{1,3})\s+)?(.*)$`)

func rulesClassify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rules classify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("rules", "", "YAML rules file (default: the shipped rules)")
	var a response.Answer
	fs.StringVar(&a.Phase, "phase", "rcpt", "SMTP phase: connect, greeting, ehlo, mail, rcpt, data, dot")
	fs.StringVar(&a.Provider, "provider", "", "provider (google, yahoo, microsoft, ...)")
	fs.StringVar(&a.SendingDomain, "sending-domain", "", "sending (From) domain")
	fs.StringVar(&a.RecipientDomain, "recipient-domain", "", "recipient domain")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New(`rules classify: give the reply as one argument, e.g. "550 5.1.1 user unknown"`)
	}
	m := replyRE.FindStringSubmatch(strings.TrimSpace(fs.Arg(0)))
	if m == nil {
		return fmt.Errorf("rules classify: %q does not start with a reply code", fs.Arg(0))
	}
	a.Code, _ = strconv.Atoi(m[1])
	a.Enhanced, a.Text = m[2], m[3]
	rules := response.Default()
	if *file != "" {
		var err error
		if rules, err = response.Load(*file); err != nil {
			return err
		}
	}
	d := rules.Decide(a)
	if *asJSON {
		return json.NewEncoder(stdout).Encode(map[string]any{
			"action": d.Action, "retry": d.Retry.String(), "hard": d.Hard, "reason": d.Reason,
			"signal": d.Signal, "rule": d.Rule,
		})
	}
	fmt.Fprintf(stdout, "action:  %s\n", d.Action)
	if d.Action == response.Defer {
		retry := "sender backoff"
		if d.Retry > 0 {
			retry = d.Retry.String()
		}
		fmt.Fprintf(stdout, "retry:   %s\n", retry)
	}
	if d.Action == response.Bounce {
		fmt.Fprintf(stdout, "class:   %s\n", map[bool]string{true: "hard", false: "soft"}[d.Hard])
	}
	fmt.Fprintf(stdout, "reason:  %s\nsignal:  %s\nrule:    %s\n", d.Reason, d.Signal, d.Rule)
	return nil
}
