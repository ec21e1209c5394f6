package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A small run of the whole benchmark: every field the issue asks for is
// in the JSON, the messages really were DKIM-signed, and without Postfix
// its figures are null with the reason.
func TestBenchSmallRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline")
	}
	out := filepath.Join(t.TempDir(), "bench.json")
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"-n", "300", "-size", "2048", "-dkim", "ed25519", "-no-postfix", "-out", out}, &stdout, &stderr); err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"messages", "bytes_per_message", "dkim", "msgs_per_sec", "p50_ms", "p99_ms",
		"cpu_seconds", "max_rss_mb_per_process", "postfix_msgs_per_sec", "ceiling_msgs_per_sec"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, b)
		}
	}
	if m["messages"] != 300.0 || m["bytes_per_message"] != 2048.0 || m["dkim"] != "ed25519" || m["dkim_verified"] != true {
		t.Errorf("result %s", b)
	}
	if !(m["msgs_per_sec"].(float64) > 0) || !(m["p99_ms"].(float64) >= m["p50_ms"].(float64)) || !(m["cpu_seconds"].(float64) > 0) {
		t.Errorf("figures %s", b)
	}
	if m["postfix_msgs_per_sec"] != nil || !strings.Contains(m["postfix_note"].(string), "skipped") {
		t.Errorf("postfix figures without postfix: %s", b)
	}
	if !strings.Contains(stdout.String(), "msgs/s") {
		t.Errorf("no table printed: %s", stdout.String())
	}
}
