// Command bouncecorpus measures the bounce parser (package dsn) against a
// labelled corpus: a folder of .eml files and a labels.jsonl file with one
// JSON object per sample (file, is_bounce, recipient_confidence, and
// records of recipient, status, reason and hardbounce).
//
//	go run ./tools/cmd/bouncecorpus -corpus /path/to/corpus/bounces
//
// It prints reason accuracy, hard/soft accuracy and recipient accuracy, a
// confusion matrix of reasons (expected × got), every miss, and every
// message labelled as not a bounce that the parser treated as one.
//
// Records are matched per message in two passes: a labelled record with a
// recipient is matched to the first parsed record with the same address
// (compared without regard to case); the labelled records left over (no
// recipient in the label, or an address the parser did not report) are then
// matched in order to the parsed records left over. A labelled record left
// without a partner counts as wrong on every measure. Reason and hard/soft
// accuracy are taken over the records of messages labelled as bounces;
// recipient accuracy over the labelled records that name a recipient in
// messages whose recipient_confidence is "high".
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/mailwave/mailwave/pkg/dsn"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bouncecorpus:", err)
		os.Exit(1)
	}
}

// label is one line of labels.jsonl.
type label struct {
	File                string        `json:"file"`
	MTA                 *string       `json:"mta"`
	IsBounce            bool          `json:"is_bounce"`
	RecipientConfidence string        `json:"recipient_confidence"`
	Records             []labelRecord `json:"records"`
}

type labelRecord struct {
	Recipient  *string `json:"recipient"`
	Status     string  `json:"status"`
	Reason     string  `json:"reason"`
	HardBounce bool    `json:"hardbounce"`
}

// tally accumulates the measures.
type tally struct {
	records, reasonOK, hardOK int
	undisputed, undisputedOK  int // records whose label is not marked disputed
	rcptTotal, rcptOK         int
	extra                     int
	confusion                 map[[2]string]int
	misses                    []string
	falseBounces              []string
	notBounces                int
	messages                  int
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bouncecorpus", flag.ContinueOnError)
	corpus := fs.String("corpus", "", "folder holding the .eml samples and labels.jsonl")
	verbose := fs.Bool("v", false, "show the diagnostic text of every miss")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *corpus == "" {
		return errors.New("-corpus is required")
	}
	labels, err := readLabels(filepath.Join(*corpus, "labels.jsonl"))
	if err != nil {
		return err
	}
	t := &tally{confusion: map[[2]string]int{}}
	for _, l := range labels {
		if err := ctx.Err(); err != nil {
			return err
		}
		raw, err := os.ReadFile(filepath.Join(*corpus, l.File))
		if err != nil {
			return err
		}
		m, err := dsn.Parse(raw)
		if err != nil {
			m = &dsn.Message{Kind: dsn.KindOther}
		}
		t.add(l, m, *verbose)
	}
	t.print(stdout)
	return nil
}

func readLabels(path string) ([]label, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []label
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var l label
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			return nil, fmt.Errorf("labels: %w", err)
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

func (t *tally) add(l label, m *dsn.Message, verbose bool) {
	t.messages++
	mta := "-"
	if l.MTA != nil {
		mta = *l.MTA
	}
	if !l.IsBounce {
		t.notBounces++
		if m.IsBounce {
			t.falseBounces = append(t.falseBounces, fmt.Sprintf("%s (%s): kind %s, %d records", l.File, mta, m.Kind, len(m.Records)))
		}
		return
	}
	got := make([]*dsn.Record, len(l.Records))
	used := make([]bool, len(m.Records))
	for i, lr := range l.Records {
		if lr.Recipient == nil {
			continue
		}
		for j := range m.Records {
			if !used[j] && strings.EqualFold(m.Records[j].Recipient, *lr.Recipient) {
				used[j], got[i] = true, &m.Records[j]
				break
			}
		}
	}
	next := 0
	for i := range l.Records {
		if got[i] != nil {
			continue
		}
		for next < len(used) && used[next] {
			next++
		}
		if next < len(used) {
			used[next], got[i] = true, &m.Records[next]
		}
	}
	for _, u := range used {
		if !u {
			t.extra++
		}
	}
	if !m.IsBounce {
		t.misses = append(t.misses, fmt.Sprintf("%s (%s): not recognised as a bounce (kind %s)", l.File, mta, m.Kind))
	}
	for i, lr := range l.Records {
		t.records++
		g := got[i]
		gotReason, gotHard, gotRcpt, diag := "(none)", false, "", ""
		if g != nil {
			gotReason, gotHard, gotRcpt, diag = string(g.Reason), g.Hard, g.Recipient, g.Diagnostic
		}
		t.confusion[[2]string{lr.Reason, gotReason}]++
		ok := true
		if l.RecipientConfidence != "disputed" {
			t.undisputed++
		}
		if gotReason == lr.Reason {
			t.reasonOK++
			if l.RecipientConfidence != "disputed" {
				t.undisputedOK++
			}
		} else {
			ok = false
		}
		if g != nil && gotHard == lr.HardBounce {
			t.hardOK++
		} else {
			ok = false
		}
		want := "-"
		if lr.Recipient != nil {
			want = *lr.Recipient
			if l.RecipientConfidence == "high" {
				t.rcptTotal++
				if g != nil && strings.EqualFold(gotRcpt, want) {
					t.rcptOK++
				} else {
					ok = false
				}
			}
		}
		if !ok {
			s := fmt.Sprintf("%s (%s): want %s/%s hard=%v, got %s/%s hard=%v",
				l.File, mta, want, lr.Reason, lr.HardBounce, orDash(gotRcpt), gotReason, gotHard)
			if verbose && g != nil {
				s += fmt.Sprintf("\n      status %q diag %q", g.Status, trim(diag, 300))
			}
			t.misses = append(t.misses, s)
		}
	}
}

func (t *tally) print(w io.Writer) {
	pct := func(a, b int) float64 {
		if b == 0 {
			return 100
		}
		return 100 * float64(a) / float64(b)
	}
	fmt.Fprintf(w, "messages: %d (%d labelled not a bounce)\n", t.messages, t.notBounces)
	fmt.Fprintf(w, "reason accuracy:    %6.2f%% (%d/%d records)\n", pct(t.reasonOK, t.records), t.reasonOK, t.records)
	fmt.Fprintf(w, "  without labels marked disputed: %6.2f%% (%d/%d records)\n", pct(t.undisputedOK, t.undisputed), t.undisputedOK, t.undisputed)
	fmt.Fprintf(w, "hard/soft accuracy: %6.2f%% (%d/%d records)\n", pct(t.hardOK, t.records), t.hardOK, t.records)
	fmt.Fprintf(w, "recipient accuracy: %6.2f%% (%d/%d records with a high-confidence recipient)\n", pct(t.rcptOK, t.rcptTotal), t.rcptOK, t.rcptTotal)
	fmt.Fprintf(w, "extra records (parsed, not in the labels): %d\n", t.extra)
	fmt.Fprintf(w, "not-a-bounce messages treated as bounces: %d\n", len(t.falseBounces))
	for _, s := range t.falseBounces {
		fmt.Fprintf(w, "  %s\n", s)
	}

	var rows, cols []string
	seenR, seenC := map[string]bool{}, map[string]bool{}
	for k := range t.confusion {
		if !seenR[k[0]] {
			seenR[k[0]] = true
			rows = append(rows, k[0])
		}
		if !seenC[k[1]] {
			seenC[k[1]] = true
			cols = append(cols, k[1])
		}
	}
	sort.Strings(rows)
	sort.Strings(cols)
	fmt.Fprintf(w, "\nconfusion (rows expected, columns got; only non-zero cells):\n")
	for _, r := range rows {
		var cells []string
		for _, c := range cols {
			if n := t.confusion[[2]string{r, c}]; n > 0 {
				mark := ""
				if r != c {
					mark = "!"
				}
				cells = append(cells, fmt.Sprintf("%s%s=%d", mark, c, n))
			}
		}
		fmt.Fprintf(w, "  %-16s %s\n", r, strings.Join(cells, " "))
	}
	fmt.Fprintf(w, "\nmisses: %d\n", len(t.misses))
	for _, s := range t.misses {
		fmt.Fprintf(w, "  %s\n", s)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func trim(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
