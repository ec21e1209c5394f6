package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/mailwave/mailwave/pkg/dsn"
)

// classifyResult is the JSON form of one classified message: exactly
// file, kind, is_bounce and records, and feedback for an ARF report.
type classifyResult struct {
	File     string           `json:"file"`
	Kind     dsn.Kind         `json:"kind"`
	IsBounce bool             `json:"is_bounce"`
	Records  []classifyRecord `json:"records"`
	Feedback map[string]any   `json:"feedback,omitempty"`
	// err says why the file could not be read as a message; it is
	// reported on stderr, not in the JSON.
	err error
}

// classifyRecord is the JSON form of one reported recipient.
type classifyRecord struct {
	Recipient  string `json:"recipient"`
	Status     string `json:"status"`
	ReplyCode  string `json:"reply_code"`
	Reason     string `json:"reason"`
	HardBounce bool   `json:"hardbounce"`
}

// runClassify reads bounce, complaint and reply messages and says what each
// one is and, per recipient, why delivery failed. Each PATH is a message
// file or a folder whose .eml files are read in name order.
func runClassify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("classify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print one JSON object per message, one per line")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mailwave classify [--json] PATH...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("classify: no PATH given")
	}
	files, err := messageFiles(fs.Args())
	if err != nil {
		return fmt.Errorf("classify: %w", err)
	}
	var results []classifyResult
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("classify: %w", err)
		}
		r := classifyMessage(filepath.Base(f), raw)
		if r.err != nil {
			fmt.Fprintf(stderr, "classify: %s: %v\n", f, r.err)
		}
		results = append(results, r)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		for _, r := range results {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	return printClassifyTable(stdout, results)
}

// classifyMessage parses one message; an unreadable one is reported, not
// fatal, so that one bad file does not hide the others.
func classifyMessage(name string, raw []byte) classifyResult {
	res := classifyResult{File: name, Records: []classifyRecord{}}
	m, err := dsn.Parse(raw)
	if err != nil {
		res.Kind, res.err = dsn.KindOther, err
		return res
	}
	res.Kind, res.IsBounce = m.Kind, m.IsBounce
	if m.Kind == dsn.KindARF || m.Kind == dsn.KindOther {
		// The ARF reader also knows the provider variants (JMRP, scomp,
		// forwarded reports) that do not announce themselves.
		if fb, ok := classifyARF(raw); ok {
			res.Kind, res.IsBounce, res.Feedback = dsn.KindARF, false, fb
			return res
		}
		if m.Kind == dsn.KindARF {
			return res
		}
	}
	for _, r := range m.Records {
		res.Records = append(res.Records, classifyRecord{
			Recipient:  r.Recipient,
			Status:     r.Status,
			ReplyCode:  r.ReplyCode,
			Reason:     string(r.Reason),
			HardBounce: r.Hard,
		})
	}
	return res
}

// messageFiles expands folders to the .eml files they hold.
func messageFiles(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			out = append(out, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, err
		}
		var names []string
		for _, e := range entries {
			if !e.IsDir() && strings.EqualFold(filepath.Ext(e.Name()), ".eml") {
				names = append(names, e.Name())
			}
		}
		sort.Strings(names)
		for _, n := range names {
			out = append(out, filepath.Join(p, n))
		}
	}
	return out, nil
}

func printClassifyTable(w io.Writer, results []classifyResult) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE\tKIND\tBOUNCE\tRECIPIENT\tSTATUS\tCODE\tREASON\tHARD")
	for _, r := range results {
		switch {
		case r.err != nil:
			fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t\t\t\t\n", r.File, r.Kind, r.IsBounce, "unreadable")
		case r.Feedback != nil:
			// The recipient as the report gives it, or "redacted".
			rcpt, _ := r.Feedback["recipient"].(string)
			if rcpt == "" {
				rcpt = "(redacted)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t\t\t%v\t\n", r.File, r.Kind, r.IsBounce, rcpt, r.Feedback["feedback_type"])
		case len(r.Records) == 0:
			fmt.Fprintf(tw, "%s\t%s\t%v\t-\t\t\t\t\n", r.File, r.Kind, r.IsBounce)
		}
		for i, rec := range r.Records {
			file, kind, bounce := r.File, string(r.Kind), fmt.Sprint(r.IsBounce)
			if i > 0 {
				file, kind, bounce = "", "", ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%v\n", file, kind, bounce,
				dashIfEmpty(rec.Recipient), dashIfEmpty(rec.Status), dashIfEmpty(rec.ReplyCode), rec.Reason, rec.HardBounce)
		}
	}
	return tw.Flush()
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
