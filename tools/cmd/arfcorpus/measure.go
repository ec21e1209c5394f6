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
	"slices"
	"strconv"
	"strings"
	"time"

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

type sample struct {
	file    string
	report  *arf.Report
	err     error
	checked map[string]bool // field → matched
}

type result struct {
	samples []sample
}

func (r result) misses() int {
	n := 0
	for _, s := range r.samples {
		for _, ok := range s.checked {
			if !ok {
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
	s := sample{file: l.File, checked: map[string]bool{}}
	s.report, s.err = arf.Parse(raw)
	if s.err != nil {
		for _, f := range fieldOrder {
			s.checked[f] = false
		}
		return s
	}
	r := s.report
	check := func(field string, ok bool) { s.checked[field] = ok }

	wantType := l.Report.FeedbackType
	if wantType == "" && len(l.FeedbackTypes) > 0 {
		wantType = l.FeedbackTypes[0]
	}
	check("feedback_type", r.FeedbackType == wantType)
	check("source_ip", ipString(r) == str(l.Report.SourceIP))
	// The reported recipient is what the labels give: Original-Rcpt-To when
	// they have it, else the reported message's To.
	if len(l.Report.OriginalRcptTo) > 0 {
		check("recipient", slices.Equal(r.OriginalRcptTo, l.Report.OriginalRcptTo))
	} else {
		check("recipient", len(r.OriginalRcptTo) == 0 && r.Reported.To == str(l.ReportedMessage.To))
	}
	check("original_rcpt_to", slices.Equal(r.OriginalRcptTo, l.Report.OriginalRcptTo))
	check("original_mail_from", r.OriginalMailFrom == str(l.Report.OriginalMailFrom))
	check("reported_domain", slices.Equal(r.ReportedDomains, l.Report.ReportedDomain))
	check("user_agent", r.UserAgent == str(l.Report.UserAgent))
	check("arrival_date", arrivalMatches(r, l.Report.ArrivalDate))
	authFailure := ""
	if r.AuthFailure != nil {
		authFailure = r.AuthFailure.Type
	}
	check("auth_failure", authFailure == str(l.Report.AuthFailure))
	rm := l.ReportedMessage
	check("reported.part_type", r.Reported.PartType == str(rm.PartType))
	check("reported.message_id", r.Reported.MessageID == str(rm.MessageID))
	check("reported.from", r.Reported.From == str(rm.From))
	check("reported.to", r.Reported.To == str(rm.To))
	check("reported.subject", r.Reported.Subject == str(rm.Subject))
	check("reported.date", r.Reported.Date == str(rm.Date))
	return s
}

// arrivalMatches compares the arrival date with its label: a string is
// the field as written, a number the instant in Unix seconds.
func arrivalMatches(r *arf.Report, lbl json.RawMessage) bool {
	v := strings.TrimSpace(string(lbl))
	switch {
	case v == "" || v == "null":
		return r.ArrivalDateRaw == "" && r.ArrivalDate.IsZero()
	case strings.HasPrefix(v, `"`):
		var s string
		if err := json.Unmarshal(lbl, &s); err != nil {
			return false
		}
		return r.ArrivalDateRaw == s
	default:
		n, err := strconv.ParseInt(v, 10, 64)
		return err == nil && !r.ArrivalDate.IsZero() && r.ArrivalDate.Unix() == n
	}
}

// got renders what the parser extracted for a field, for the list of
// misses.
func got(r *arf.Report, field string) string {
	if r == nil {
		return "(not parsed)"
	}
	switch field {
	case "feedback_type":
		return r.FeedbackType
	case "source_ip":
		return ipString(r)
	case "recipient", "original_rcpt_to":
		return fmt.Sprintf("rcpt=%q to=%q", r.OriginalRcptTo, r.Reported.To)
	case "original_mail_from":
		return r.OriginalMailFrom
	case "reported_domain":
		return fmt.Sprintf("%q", r.ReportedDomains)
	case "user_agent":
		return r.UserAgent
	case "arrival_date":
		return fmt.Sprintf("%q (%s)", r.ArrivalDateRaw, r.ArrivalDate.UTC().Format(time.RFC3339))
	case "auth_failure":
		if r.AuthFailure == nil {
			return ""
		}
		return r.AuthFailure.Type
	case "reported.part_type":
		return r.Reported.PartType
	case "reported.message_id":
		return r.Reported.MessageID
	case "reported.from":
		return r.Reported.From
	case "reported.to":
		return r.Reported.To
	case "reported.subject":
		return r.Reported.Subject
	case "reported.date":
		return r.Reported.Date
	}
	return ""
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
			if s.checked[f] {
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
			if !s.checked[f] {
				ms = append(ms, miss{s.file, f, "(see labels.jsonl)", got(s.report, f)})
			}
		}
	}
	fmt.Fprintf(w, "misses: %d\n", len(ms))
	for _, m := range ms {
		fmt.Fprintf(w, "  %s %s: want %s, got %s\n", m.file, m.field, m.want, m.got)
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
