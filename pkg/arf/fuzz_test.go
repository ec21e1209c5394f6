package arf_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/mailwave/mailwave/pkg/arf"
)

var variants = map[string]bool{
	arf.VariantRFC5965: true, arf.VariantNoReportType: true, arf.VariantTextFeedback: true,
	arf.VariantNoFeedbackPart: true, arf.VariantMicrosoftJMRP: true, arf.VariantAOLSComp: true,
}

// FuzzParse checks that Parse never panics, fails only with its sentinel
// errors, and returns a report that keeps its documented invariants.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*", "*.eml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range files {
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte("Content-Type: multipart/report; report-type=feedback-report; boundary=x\n\n--x\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n--x--\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := arf.Parse(raw)
		if err != nil {
			if r != nil {
				t.Fatal("report returned with an error")
			}
			if !errors.Is(err, arf.ErrNotReport) && !errors.Is(err, arf.ErrMalformed) {
				t.Fatalf("error %v is neither ErrNotReport nor ErrMalformed", err)
			}
			return
		}
		if r.FeedbackType == "" || !variants[r.Variant] || r.Incidents < 1 || len(r.Fingerprint) != 64 {
			t.Fatalf("invariant broken: type %q variant %q incidents %d fingerprint %q",
				r.FeedbackType, r.Variant, r.Incidents, r.Fingerprint)
		}
		if r.Redacted != (r.Recipient() == "") {
			t.Fatalf("Redacted %v but Recipient %q", r.Redacted, r.Recipient())
		}
		for _, a := range r.SenderCandidates() {
			if a == "" {
				t.Fatal("empty sender candidate")
			}
		}
		again, err := arf.Parse(raw)
		if err != nil || again.Fingerprint != r.Fingerprint {
			t.Fatalf("second Parse differs: %v, %q vs %q", err, again.Fingerprint, r.Fingerprint)
		}
	})
}
