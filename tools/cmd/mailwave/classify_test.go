package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
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

// The JSON output is exactly the documented shape: one object per line
// with file, kind, is_bounce and records (and feedback for an ARF report
// only), each record with recipient, status, reply_code, reason and
// hardbounce, of the documented types.
func TestClassifyJSONShape(t *testing.T) {
	var out, errb bytes.Buffer
	dir := t.TempDir()
	for _, f := range []string{"lhost-postfix-02.eml", "rfc3834-01.eml", "arf-02.eml", "is-not-bounce-02.eml"} {
		raw, err := os.ReadFile(filepath.Join("testdata", "classify", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Not a message at all: reported on stderr, still one line of the
	// same shape.
	if err := os.WriteFile(filepath.Join(dir, "zz-empty.eml"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), []string{"classify", "--json", dir}, &out, &errb); err != nil {
		t.Fatalf("classify: %v (stderr %q)", err, errb.String())
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines, want one per message:\n%s", len(lines), out.String())
	}
	if !strings.Contains(errb.String(), "zz-empty.eml") {
		t.Errorf("stderr does not name the unreadable file: %q", errb.String())
	}
	keys := func(m map[string]any) string {
		var k []string
		for key := range m {
			k = append(k, key)
		}
		sort.Strings(k)
		return strings.Join(k, ",")
	}
	kinds := map[string]bool{"dsn": true, "arf": true, "autoreply": true, "other": true}
	sawRecord := false
	for _, line := range lines {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		want := "file,is_bounce,kind,records"
		if obj["kind"] == "arf" {
			want = "feedback,file,is_bounce,kind,records"
			if _, ok := obj["feedback"].(map[string]any); !ok {
				t.Errorf("feedback is %T", obj["feedback"])
			}
		}
		if got := keys(obj); got != want {
			t.Errorf("keys %s, want %s: %s", got, want, line)
		}
		if _, ok := obj["file"].(string); !ok || strings.ContainsRune(obj["file"].(string), filepath.Separator) {
			t.Errorf("file %v is not a base name", obj["file"])
		}
		if k, _ := obj["kind"].(string); !kinds[k] {
			t.Errorf("kind %v", obj["kind"])
		}
		if _, ok := obj["is_bounce"].(bool); !ok {
			t.Errorf("is_bounce %v", obj["is_bounce"])
		}
		recs, ok := obj["records"].([]any)
		if !ok {
			t.Fatalf("records %T in %s", obj["records"], line)
		}
		for _, r := range recs {
			rec := r.(map[string]any)
			if got := keys(rec); got != "hardbounce,reason,recipient,reply_code,status" {
				t.Errorf("record keys %s: %s", got, line)
			}
			for _, k := range []string{"recipient", "status", "reply_code", "reason"} {
				if _, ok := rec[k].(string); !ok {
					t.Errorf("record %s is %T", k, rec[k])
				}
			}
			if _, ok := rec["hardbounce"].(bool); !ok {
				t.Errorf("record hardbounce is %T", rec["hardbounce"])
			}
			sawRecord = true
		}
	}
	if !sawRecord {
		t.Error("no record checked")
	}
	// The documented example, byte for byte.
	want := `{"file":"lhost-postfix-02.eml","kind":"dsn","is_bounce":true,"records":[{"recipient":"filtered@example.co.jp","status":"5.2.1","reply_code":"550","reason":"userunknown","hardbounce":true},{"recipient":"userunknown@example.co.jp","status":"5.1.1","reply_code":"550","reason":"userunknown","hardbounce":true}]}`
	if lines[2] != want {
		t.Errorf("postfix line\n got %s\nwant %s", lines[2], want)
	}
}
