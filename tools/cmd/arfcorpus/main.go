// Command arfcorpus measures the ARF parser (package arf) against a labelled
// corpus of feedback reports: a directory of *.eml files and a labels.jsonl
// with one JSON object per sample (see the corpus README). For every report
// it compares the feedback type, the source IP and the reported recipient —
// and the other labelled fields — with what arf.Parse extracts, then prints
// per-field accuracy and every miss.
//
//	go run ./tools/cmd/arfcorpus -corpus /path/to/corpus/arf
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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "arfcorpus:", err)
		os.Exit(1)
	}
}

// errMisses is returned with -fail when a field was missed.
var errMisses = errors.New("fields missed")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("arfcorpus", flag.ContinueOnError)
	fs.SetOutput(stderr)
	corpus := fs.String("corpus", "", "corpus directory holding *.eml and labels.jsonl (required)")
	verbose := fs.Bool("v", false, "print what was extracted from every report")
	fail := fs.Bool("fail", false, "exit with an error when any field is missed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *corpus == "" {
		fs.Usage()
		return errors.New("-corpus is required")
	}
	res, err := measure(ctx, *corpus)
	if err != nil {
		return err
	}
	res.print(stdout, *verbose)
	if *fail && res.misses() > 0 {
		return fmt.Errorf("%d %w", res.misses(), errMisses)
	}
	return nil
}
