// Command spfsuite runs the openspf SPF test suite (a YAML file such as
// rfc4408-tests.yml) against Mailwave's RFC 7208 checker: each scenario's
// zone data is served by a DNS server on 127.0.0.1, and every test goes
// through spf.Checker with the same DNS client that `mailwave spf --dns`
// uses. It prints each failure and the pass rate, and exits non-zero when the
// rate is below -min.
//
//	go run ./tools/cmd/spfsuite -suite /work/shared/corpus/spf/rfc4408-tests.yml
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
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "spfsuite:", err)
		os.Exit(1)
	}
}

// errBelowMin is returned when the pass rate is below the -min flag.
var errBelowMin = errors.New("pass rate below minimum")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("spfsuite", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("suite", "", "path of the YAML test suite")
	timeout := fs.Duration("timeout", time.Second, "DNS timeout per query (the suite's TIMEOUT records wait this long)")
	parallel := fs.Int("parallel", 8, "tests of one scenario run at once")
	min := fs.Float64("min", 0.97, "exit non-zero when the pass rate is below this fraction")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("-suite PATH is required")
	}
	f, err := os.Open(*path)
	if err != nil {
		return err
	}
	defer f.Close()
	scenarios, err := parseSuite(f)
	if err != nil {
		return err
	}
	sum, err := runSuite(ctx, scenarios, *timeout, *parallel, time.Now())
	if err != nil {
		return err
	}
	report(stdout, sum)
	if sum.rate() < *min {
		return fmt.Errorf("%w: %.1f%% < %.1f%%", errBelowMin, 100*sum.rate(), 100**min)
	}
	return nil
}
