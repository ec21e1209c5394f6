package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func TestClassifyJSON(t *testing.T) {
	var out, errb bytes.Buffer
	dir := filepath.Join("testdata", "classify")
	if err := run(context.Background(), []string{"classify", "--json", dir}, &out, &errb); err != nil {
		t.Fatalf("classify: %v (stderr %q)", err, errb.String())
	}
	got := map[string]classifyResult{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r classifyResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		got[r.File] = r
	}
	if len(got) != 6 {
		t.Fatalf("got %d messages, want 6:\n%s", len(got), out.String())
	}

	type rec struct {
		recipient, reason string
		hard              bool
	}
	for _, tc := range []struct {
		file     string
		kind     string
		isBounce bool
		records  []rec
	}{
		{"lhost-postfix-02.eml", "dsn", true, []rec{
			{"filtered@example.co.jp", "userunknown", true},
			{"userunknown@example.co.jp", "userunknown", true},
		}},
		{"lhost-qmail-25.eml", "dsn", true, []rec{
			{"mailboxfull@libsisimai.net", "mailboxfull", false},
			{"userunknown@libsisimai.net", "userunknown", true},
		}},
		// A positive DSN (the file holds a second one after an mbox
		// "From " line; a file is read as one message).
		{"rfc3464-28.eml", "dsn", false, []rec{
			{"kijitora@neko.example.jp", "delivered", false},
		}},
		{"rfc3834-01.eml", "autoreply", false, []rec{{"", "vacation", false}}},
		{"is-not-bounce-02.eml", "other", false, nil},
		{"arf-02.eml", "arf", false, nil},
	} {
		t.Run(tc.file, func(t *testing.T) {
			r, ok := got[tc.file]
			if !ok {
				t.Fatalf("no output for %s", tc.file)
			}
			if string(r.Kind) != tc.kind || r.IsBounce != tc.isBounce {
				t.Errorf("kind %s is_bounce %v, want %s %v", r.Kind, r.IsBounce, tc.kind, tc.isBounce)
			}
			if len(r.Records) != len(tc.records) {
				t.Fatalf("records %+v, want %d", r.Records, len(tc.records))
			}
			for i, w := range tc.records {
				g := r.Records[i]
				if g.Recipient != w.recipient || g.Reason != w.reason || g.HardBounce != w.hard {
					t.Errorf("record %d = %s/%s/%v, want %s/%s/%v", i, g.Recipient, g.Reason, g.HardBounce, w.recipient, w.reason, w.hard)
				}
			}
		})
	}

	// The records carry the fields the command promises.
	pf := got["lhost-postfix-02.eml"].Records[1]
	if pf.Status != "5.1.1" || pf.ReplyCode != "550" {
		t.Errorf("postfix record status %q code %q, want 5.1.1 550", pf.Status, pf.ReplyCode)
	}
	fb := got["arf-02.eml"].Feedback
	if fb == nil {
		t.Fatal("arf-02.eml: no feedback object")
	}
	if fb["feedback_type"] != "abuse" || fb["original_mail_from"] != "shironeko@example.com" {
		t.Errorf("feedback %v", fb)
	}
	rcpts, _ := fb["original_rcpt_to"].([]any)
	if len(rcpts) != 1 || rcpts[0] != "this-local-part-does-not-exist-on-yahoo@yahoo.com" {
		t.Errorf("original_rcpt_to %v", fb["original_rcpt_to"])
	}
	for _, k := range []string{"source_ip", "reported_domain"} {
		if _, ok := fb[k]; !ok {
			t.Errorf("feedback lacks %s", k)
		}
	}
}

func TestClassifyTable(t *testing.T) {
	var out, errb bytes.Buffer
	file := filepath.Join("testdata", "classify", "lhost-qmail-25.eml")
	if err := run(context.Background(), []string{"classify", file}, &out, &errb); err != nil {
		t.Fatalf("classify: %v", err)
	}
	s := out.String()
	for _, want := range []string{"RECIPIENT", "mailboxfull@libsisimai.net", "mailboxfull", "userunknown@libsisimai.net", "userunknown"} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
}

func TestClassifyErrors(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"classify"}, &out, &errb); err == nil {
		t.Error("classify without a path: no error")
	}
	if err := run(context.Background(), []string{"classify", filepath.Join("testdata", "classify", "missing.eml")}, &out, &errb); err == nil {
		t.Error("classify of a missing file: no error")
	}
}
