package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sampleReport = "From: fbl@isp.example\n" +
	"Subject: report\n" +
	"Content-Type: multipart/report; report-type=feedback-report; boundary=b\n" +
	"\n" +
	"--b\n" +
	"Content-Type: message/feedback-report\n" +
	"\n" +
	"Feedback-Type: abuse\n" +
	"User-Agent: T/1\n" +
	"Original-Rcpt-To: <user@isp.example>\n" +
	"Arrival-Date: Thu, 8 Mar 2005 14:00:00 EDT\n" +
	"Source-IP: 192.0.2.1\n" +
	"--b\n" +
	"Content-Type: text/rfc822-headers\n" +
	"\n" +
	"From: a@brand.example\n" +
	"To: user@isp.example\n" +
	"Message-ID: <m@brand.example>\n" +
	"--b--\n"

// labelOK describes sampleReport correctly; labelWrong gives another source
// IP and recipient.
const (
	labelOK = `{"file": "ok.eml", "feedback_types": ["abuse"], "report": {"arrival_date": 1110304800, ` +
		`"auth_failure": null, "feedback_type": "abuse", "original_mail_from": null, ` +
		`"original_rcpt_to": ["user@isp.example"], "reported_domain": [], "source_ip": "192.0.2.1", "user_agent": "T/1"}, ` +
		`"reported_message": {"date": null, "from": "a@brand.example", "message_id": "<m@brand.example>", ` +
		`"part_type": "text/rfc822-headers", "subject": null, "to": "user@isp.example"}}`
	labelWrong = `{"file": "wrong.eml", "feedback_types": ["abuse"], "report": {"arrival_date": "Thu, 8 Mar 2005 14:00:00 EDT", ` +
		`"auth_failure": null, "feedback_type": "abuse", "original_mail_from": null, ` +
		`"original_rcpt_to": ["other@isp.example"], "reported_domain": [], "source_ip": "192.0.2.99", "user_agent": "T/1"}, ` +
		`"reported_message": {"date": null, "from": "a@brand.example", "message_id": "<m@brand.example>", ` +
		`"part_type": "text/rfc822-headers", "subject": null, "to": "user@isp.example"}}`
)

func writeCorpus(t *testing.T, labels ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"ok.eml", "wrong.eml"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(sampleReport), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "labels.jsonl"), []byte(strings.Join(labels, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRunAllMatch(t *testing.T) {
	dir := writeCorpus(t, labelOK)
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"-corpus", dir, "-fail"}, &out, &errOut); err != nil {
		t.Fatalf("run: %v\n%s%s", err, out.String(), errOut.String())
	}
	for _, want := range []string{"feedback_type              1/1", "source_ip                  1/1", "recipient                  1/1", "misses: 0"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunReportsMisses(t *testing.T) {
	dir := writeCorpus(t, labelOK, labelWrong)
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"-corpus", dir, "-fail"}, &out, &errOut)
	if !errors.Is(err, errMisses) {
		t.Fatalf("run = %v, want errMisses\n%s", err, out.String())
	}
	for _, want := range []string{
		"source_ip                  1/2",
		"recipient                  1/2",
		"arrival_date               2/2", // a string label is compared with the field as written
		`wrong.eml source_ip: want "192.0.2.99", got "192.0.2.1"`,
		"misses: 3", // source_ip, recipient, original_rcpt_to
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	// Without -fail the same corpus only reports.
	out.Reset()
	if err := run(context.Background(), []string{"-corpus", dir}, &out, &errOut); err != nil {
		t.Errorf("run without -fail: %v", err)
	}
}

func TestRunErrors(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), nil, &out, &errOut); err == nil {
		t.Error("run without -corpus succeeded")
	}
	if err := run(context.Background(), []string{"-corpus", t.TempDir()}, &out, &errOut); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run on a directory without labels = %v, want ErrNotExist", err)
	}
	dir := writeCorpus(t, `{"file": "../escape.eml"}`)
	if err := run(context.Background(), []string{"-corpus", dir}, &out, &errOut); err == nil {
		t.Error("a label naming a file outside the corpus was accepted")
	}
}
