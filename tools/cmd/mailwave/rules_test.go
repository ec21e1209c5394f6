package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRulesClassifyDryRun(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"rules", "classify", "--provider", "google", "--json",
		"421 4.7.28 Gmail has detected an unusual rate of unsolicited mail"}, &out, &out)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if got["action"] != "defer" || got["retry"] != "20m0s" || got["rule"] != "gmail-rate-limited" || got["signal"] != "throttled" {
		t.Fatalf("%v", got)
	}
	out.Reset()
	if err := run(context.Background(), []string{"rules", "classify", "550 5.1.1 no such user"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "class:   hard") || !strings.Contains(out.String(), "reason:  userunknown") {
		t.Fatalf("%s", out.String())
	}
}

func TestRulesCheck(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("rules:\n- name: r1\n  then: {action: later}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := run(context.Background(), []string{"rules", "check", bad}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), `"r1"`) || !strings.Contains(err.Error(), "then.action") {
		t.Fatalf("err = %v", err)
	}
	if err := run(context.Background(), []string{"rules", "check"}, &out, &out); err != nil {
		t.Fatal(err)
	}
}
