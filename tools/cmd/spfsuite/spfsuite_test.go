package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The whole openspf RFC 4408 suite (BSD-3-Clause, notice in
// testdata/rfc4408-tests.LICENSE) runs through the driver.
const suitePath = "testdata/rfc4408-tests.yml"

func TestSuitePassRate(t *testing.T) {
	f, err := os.Open(suitePath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	scenarios, err := parseSuite(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(scenarios) != 15 {
		t.Fatalf("%d scenarios, want 15", len(scenarios))
	}
	sum, err := runSuite(context.Background(), scenarios, time.Second, 8, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Cases) != 191 {
		t.Errorf("%d tests, want 191", len(sum.Cases))
	}
	var out bytes.Buffer
	report(&out, sum)
	t.Log(out.String())
	if sum.rate() < 0.97 {
		t.Errorf("pass rate %.3f below 0.97", sum.rate())
	}
}

func TestRunReportsAndEnforcesMinimum(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mini.yml")
	suite := `---
description: mini
tests:
  good:
    helo: mail.example.com
    host: 192.0.2.1
    mailfrom: a@ok.example.com
    result: pass
  wrong:
    helo: mail.example.com
    host: 192.0.2.1
    mailfrom: a@ok.example.com
    result: [fail, softfail]
  spf-as-txt:
    helo: mail.example.com
    host: 192.0.2.9
    mailfrom: a@spfonly.example.com
    result: fail
    explanation: Go away.
  timeout:
    helo: mail.example.com
    host: 192.0.2.1
    mailfrom: a@slow.example.com
    result: temperror
zonedata:
  ok.example.com:
    - TXT: v=spf1 ip4:192.0.2.1 -all
  spfonly.example.com:
    - SPF: v=spf1 a -all exp=why.example.com
    - A: [192.0.2.1, 192.0.2.2]
  why.example.com:
    - TXT: Go away.
  slow.example.com:
    - TIMEOUT
`
	if err := os.WriteFile(path, []byte(suite), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-suite", path, "-timeout", "200ms", "-min", "0.5"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"FAIL mini / wrong: got pass, want fail|softfail",
		"explanations matched: 1 of 1",
		"pass rate: 75.0% (3 of 4)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	stdout.Reset()
	err = run(context.Background(), []string{"-suite", path, "-timeout", "200ms"}, &stdout, &stderr)
	if !errors.Is(err, errBelowMin) {
		t.Errorf("run with the default minimum = %v, want errBelowMin", err)
	}
}

func TestRunRejectsBadSuites(t *testing.T) {
	tests := map[string]string{
		"not yaml":    "tests: [unclosed\n",
		"bad record":  "zonedata:\n  a.example.com:\n    - CNAME: b.example.com\n",
		"bad address": "zonedata:\n  a.example.com:\n    - A: 1.2.3\n",
		"bad mx":      "zonedata:\n  a.example.com:\n    - MX: [10]\n",
		"bare scalar": "zonedata:\n  a.example.com:\n    - SERVFAIL\n",
	}
	for name, body := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.yml")
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"-suite", path}, &stdout, &stderr)
			if !errors.Is(err, errSuite) {
				t.Errorf("run = %v, want errSuite", err)
			}
		})
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), nil, &stdout, &stderr); err == nil {
		t.Error("run without -suite succeeded")
	}
}
