package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// arfReport is an RFC 5965 report whose recipient is redacted and whose
// reported message carries a return path and a Feedback-ID.
const arfReport = "From: fbl@isp.example\r\n" +
	"To: abuse@brand.example\r\n" +
	"Subject: Abuse report\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/report; report-type=feedback-report; boundary=\"b\"\r\n" +
	"\r\n" +
	"--b\r\n" +
	"Content-Type: text/plain\r\n" +
	"\r\n" +
	"A user of ours marked your message as spam.\r\n" +
	"--b\r\n" +
	"Content-Type: message/feedback-report\r\n" +
	"\r\n" +
	"Feedback-Type: abuse\r\n" +
	"User-Agent: ExampleFBL/1.0\r\n" +
	"Version: 1\r\n" +
	"Original-Mail-From: <bounce-42@bounce.brand.example>\r\n" +
	"Original-Rcpt-To: <redacted@isp.example>\r\n" +
	"Arrival-Date: Tue, 3 Nov 2026 10:00:00 -0800\r\n" +
	"Source-IP: 192.0.2.7\r\n" +
	"Reported-Domain: brand.example\r\n" +
	"--b\r\n" +
	"Content-Type: message/rfc822\r\n" +
	"\r\n" +
	"Return-Path: <bounce-42@bounce.brand.example>\r\n" +
	"From: News <news@brand.example>\r\n" +
	"To: redacted@isp.example\r\n" +
	"Subject: Offers\r\n" +
	"Message-ID: <offers-42@brand.example>\r\n" +
	"Feedback-ID: c1:t1:bulk:mailwave\r\n" +
	"\r\n" +
	"Buy.\r\n" +
	"--b--\r\n"

func TestClassifyARF(t *testing.T) {
	got, ok := classifyARF([]byte(arfReport))
	if !ok {
		t.Fatal("classifyARF: not a report")
	}
	want := map[string]any{
		"feedback_type":        "abuse",
		"variant":              "rfc5965",
		"user_agent":           "ExampleFBL/1.0",
		"original_mail_from":   "bounce-42@bounce.brand.example",
		"original_rcpt_to":     []string{"redacted@isp.example"},
		"arrival_date":         "2026-11-03T18:00:00Z",
		"source_ip":            "192.0.2.7",
		"reported_domain":      []string{"brand.example"},
		"reported_uri":         []string{},
		"recipient":            "",
		"redacted":             true,
		"sender_candidates":    []string{"bounce-42@bounce.brand.example"},
		"reported_part_type":   "message/rfc822",
		"reported_message_id":  "<offers-42@brand.example>",
		"reported_return_path": "bounce-42@bounce.brand.example",
		"reported_to":          "redacted@isp.example",
		"reported_subject":     "Offers",
		"reported_feedback_id": "c1:t1:bulk:mailwave",
		"incidents":            1,
		"auth_failure":         "",
	}
	for k, w := range want {
		g, present := got[k]
		if !present {
			t.Errorf("key %q missing", k)
			continue
		}
		if ws, isList := w.([]string); isList {
			gs, _ := g.([]string)
			if gs == nil || !slices.Equal(gs, ws) {
				t.Errorf("%s = %#v, want %#v", k, g, w)
			}
			continue
		}
		if g != w {
			t.Errorf("%s = %#v, want %#v", k, g, w)
		}
	}
	if fp, _ := got["fingerprint"].(string); len(fp) != 64 {
		t.Errorf("fingerprint = %#v", got["fingerprint"])
	}
	// The classify command prints JSON: lists must not come out as null.
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "null") {
		t.Errorf("JSON has null: %s", b)
	}
}

func TestClassifyARFNotReport(t *testing.T) {
	for name, raw := range map[string]string{
		"plain message": "From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nhello\r\n",
		"dsn": "From: MAILER-DAEMON@mx.example\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=d\r\n\r\n" +
			"--d\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\nFinal-Recipient: rfc822; x@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n--d--\r\n",
		"empty": "",
	} {
		if got, ok := classifyARF([]byte(raw)); ok || got != nil {
			t.Errorf("%s: classifyARF = %v, %v; want nil, false", name, got, ok)
		}
	}
}

// TestClassifyARFCorpus classifies the ARF corpus (pkg/arf/testdata/corpus,
// real reports from sisimai and mail-auth): every one is "arf" with a
// feedback object carrying the fields the JSON output promises, and the
// fields agree with the corpus labels for a few of them.
func TestClassifyARFCorpus(t *testing.T) {
	var out, errb bytes.Buffer
	dir := filepath.Join("..", "..", "..", "pkg", "arf", "testdata", "corpus")
	if err := run(context.Background(), []string{"classify", "--json", dir}, &out, &errb); err != nil {
		t.Fatalf("classify: %v\n%s", err, errb.String())
	}
	got := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r struct {
			File     string         `json:"file"`
			Kind     string         `json:"kind"`
			Feedback map[string]any `json:"feedback"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		if r.Kind != "arf" || r.Feedback == nil {
			t.Errorf("%s: kind %q feedback %v, want arf with a feedback object", r.File, r.Kind, r.Feedback)
			continue
		}
		for _, k := range []string{"feedback_type", "original_rcpt_to", "original_mail_from", "source_ip", "reported_domain"} {
			if _, ok := r.Feedback[k]; !ok {
				t.Errorf("%s: feedback lacks %s", r.File, k)
			}
		}
		got[r.File] = r.Feedback
	}
	if len(got) != 10 {
		t.Fatalf("%d reports classified, want 10", len(got))
	}
	for _, tc := range []struct {
		file, feedbackType, sourceIP, mailFrom, rcpt string
	}{
		{"arf-01.eml", "abuse", "192.0.2.89", "", ""},
		{"arf-18.eml", "auth-failure", "192.0.2.222", "sironeko@example.org", "kijitora@example.com"},
		{"mail-auth-002.eml", "abuse", "192.0.2.1", "somespammer@example.net", "user@example.com"},
	} {
		f := got[tc.file]
		rcpts, _ := f["original_rcpt_to"].([]any)
		first := ""
		if len(rcpts) > 0 {
			first, _ = rcpts[0].(string)
		}
		if f["feedback_type"] != tc.feedbackType || f["source_ip"] != tc.sourceIP || f["original_mail_from"] != tc.mailFrom || first != tc.rcpt {
			t.Errorf("%s: %v", tc.file, f)
		}
	}
}
