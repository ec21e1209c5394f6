package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mailwave/mailwave/pkg/arf"
)

// label is one line of labels.jsonl. Pointers are null in the labels when
// the sample does not carry the field.
type label struct {
	File          string   `json:"file"`
	SampleID      string   `json:"sample_id"`
	FeedbackTypes []string `json:"feedback_types"`
	Report        struct {
		ArrivalDate      json.RawMessage `json:"arrival_date"` // string, Unix seconds or null
		AuthFailure      *string         `json:"auth_failure"`
		FeedbackType     string          `json:"feedback_type"`
		OriginalMailFrom *string         `json:"original_mail_from"`
		OriginalRcptTo   []string        `json:"original_rcpt_to"`
		ReportedDomain   []string        `json:"reported_domain"`
		SourceIP         *string         `json:"source_ip"`
		UserAgent        *string         `json:"user_agent"`
	} `json:"report"`
	ReportedMessage struct {
		Date      *string `json:"date"`
		From      *string `json:"from"`
		MessageID *string `json:"message_id"`
		PartType  *string `json:"part_type"`
		Subject   *string `json:"subject"`
		To        *string `json:"to"`
	} `json:"reported_message"`
}

// fields compared, in the order they are printed. The first three are the
// ones the platform acts on.
var fieldOrder = []string{
	"feedback_type", "source_ip", "recipient",
	"original_rcpt_to", "original_mail_from", "reported_domain", "user_agent",
	"arrival_date", "auth_failure",
	"reported.part_type", "reported.message_id", "reported.from", "reported.to",
	"reported.subject", "reported.date",
}

type miss struct {
	file, field, want, got string
}

// outcome is one field of one sample: what the label says and what the
// parser extracted, rendered the same way.
type outcome struct {
	want, got string
}

type sample struct {
	file    string
	report  *arf.Report
	err     error
	checked map[string]outcome
}

type result struct {
	samples []sample
}

func (r result) misses() int {
	n := 0
	for _, s := range r.samples {
		if s.err != nil {
			n++
		}
		for _, o := range s.checked {
			if o.want != o.got {
				n++
			}
		}
	}
	return n
}

// measure parses every labelled sample of dir and compares it with its
// label.
func measure(ctx context.Context, dir string) (result, error) {
	f, err := os.Open(filepath.Join(dir, "labels.jsonl"))
	if err != nil {
		return result{}, err
	}
	defer f.Close()
	var res result
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for line := 1; sc.Scan(); line++ {
		if err := ctx.Err(); err != nil {
			return result{}, err
		}
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var l label
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return result{}, fmt.Errorf("labels.jsonl:%d: %w", line, err)
		}
		if l.File == "" || filepath.Base(l.File) != l.File {
			return result{}, fmt.Errorf("labels.jsonl:%d: bad file name %q", line, l.File)
		}
		raw, err := os.ReadFile(filepath.Join(dir, l.File))
		if err != nil {
			return result{}, err
		}
		res.samples = append(res.samples, compare(l, raw))
	}
	if err := sc.Err(); err != nil {
		return result{}, err
	}
	return res, nil
}

// compare parses raw and checks it against l. A field whose label is null
// must come out empty.
func compare(l label, raw []byte) sample {
	s := sample{file: l.File, checked: map[string]outcome{}}
	s.report, s.err = arf.Parse(raw)
	if s.err != nil {
		return s
	}
	r := s.report
	check := func(field, want, got string) { s.checked[field] = outcome{want: want, got: got} }

	wantType := l.Report.FeedbackType
	if wantType == "" && len(l.FeedbackTypes) > 0 {
		wantType = l.FeedbackTypes[0]
	}
	check("feedback_type", wantType, r.FeedbackType)
	check("source_ip", str(l.Report.SourceIP), ipString(r))
	// The reported recipient is what the labels give: Original-Rcpt-To when
	// they have it, else the reported message's To.
	if len(l.Report.OriginalRcptTo) > 0 {
		check("recipient", list(l.Report.OriginalRcptTo), list(r.OriginalRcptTo))
	} else {
		got := r.Reported.To
		if len(r.OriginalRcptTo) > 0 {
			got = list(r.OriginalRcptTo)
		}
		check("recipient", str(l.ReportedMessage.To), got)
	}
	check("original_rcpt_to", list(l.Report.OriginalRcptTo), list(r.OriginalRcptTo))
	check("original_mail_from", str(l.Report.OriginalMailFrom), r.OriginalMailFrom)
	check("reported_domain", list(l.Report.ReportedDomain), list(r.ReportedDomains))
	check("user_agent", str(l.Report.UserAgent), r.UserAgent)
	check("arrival_date", arrivalWant(l.Report.ArrivalDate), arrivalGot(r, l.Report.ArrivalDate))
	authFailure := ""
	if r.AuthFailure != nil {
		authFailure = r.AuthFailure.Type
	}
	check("auth_failure", str(l.Report.AuthFailure), authFailure)
	rm := l.ReportedMessage
	check("reported.part_type", str(rm.PartType), r.Reported.PartType)
	check("reported.message_id", str(rm.MessageID), r.Reported.MessageID)
	check("reported.from", str(rm.From), r.Reported.From)
	check("reported.to", str(rm.To), r.Reported.To)
	check("reported.subject", str(rm.Subject), r.Reported.Subject)
	check("reported.date", str(rm.Date), r.Reported.Date)
	return s
}

// arrivalWant renders the arrival-date label: a string is the field as
// written, a number the instant in Unix seconds.
func arrivalWant(lbl json.RawMessage) string {
	v := strings.TrimSpace(string(lbl))
	if v == "" || v == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(lbl, &s) == nil {
		return s
	}
	if _, err := strconv.ParseInt(v, 10, 64); err == nil {
		return "unix " + v
	}
	return "unreadable label " + v
}

// arrivalGot renders the parsed arrival date the way its label is written.
func arrivalGot(r *arf.Report, lbl json.RawMessage) string {
	v := strings.TrimSpace(string(lbl))
	if _, err := strconv.ParseInt(v, 10, 64); err == nil {
		if r.ArrivalDate.IsZero() {
			return fmt.Sprintf("unparsed %q", r.ArrivalDateRaw)
		}
		return "unix " + strconv.FormatInt(r.ArrivalDate.Unix(), 10)
	}
	return r.ArrivalDateRaw
}

func list(l []string) string {
	return strings.Join(l, ", ")
}

func (res result) print(w io.Writer, verbose bool) {
	fmt.Fprintf(w, "reports: %d\n", len(res.samples))
	parsed := 0
	for _, s := range res.samples {
		if s.err == nil {
			parsed++
		}
	}
	fmt.Fprintf(w, "%-22s %5d/%-5d %6.1f%%\n", "parsed", parsed, len(res.samples), pct(parsed, len(res.samples)))
	for _, f := range fieldOrder {
		ok := 0
		for _, s := range res.samples {
			if o, done := s.checked[f]; done && o.want == o.got {
				ok++
			}
		}
		fmt.Fprintf(w, "%-22s %5d/%-5d %6.1f%%\n", f, ok, len(res.samples), pct(ok, len(res.samples)))
	}
	var ms []miss
	for _, s := range res.samples {
		if s.err != nil {
			ms = append(ms, miss{s.file, "parse", "a report", s.err.Error()})
			continue
		}
		for _, f := range fieldOrder {
			if o := s.checked[f]; o.want != o.got {
				ms = append(ms, miss{s.file, f, o.want, o.got})
			}
		}
	}
	fmt.Fprintf(w, "misses: %d\n", len(ms))
	for _, m := range ms {
		fmt.Fprintf(w, "  %s %s: want %q, got %q\n", m.file, m.field, m.want, m.got)
	}
	if !verbose {
		return
	}
	for _, s := range res.samples {
		if s.report == nil {
			continue
		}
		r := s.report
		fmt.Fprintf(w, "%s: variant=%s type=%s ip=%s rcpt=%q recipient=%q redacted=%v senders=%q message-id=%q fingerprint=%s\n",
			s.file, r.Variant, r.FeedbackType, ipString(r), r.OriginalRcptTo, r.Recipient(), r.Redacted,
			r.SenderCandidates(), r.Reported.MessageID, r.Fingerprint[:16])
	}
}

func ipString(r *arf.Report) string {
	if !r.SourceIP.IsValid() {
		return ""
	}
	return r.SourceIP.String()
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func pct(n, d int) float64 {
	if d == 0 {
		return 0
	}
	return 100 * float64(n) / float64(d)
}
