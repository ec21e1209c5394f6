package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckConfig validates a configuration whose mailbox password comes
// from the same environment as everything else, and prints it redacted.
func TestCheckConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "mailboxes.yaml")
	yaml := "mailboxes:\n  - name: google\n    host: imap.example.com\n    username: fbl@example.com\n    password_env: FBL_PASSWORD\n    trusted: true\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{
		"MW_FBL_MAILBOXES": file, "MW_FBL_ADDRESSES": "fbl@fbl.example.com",
		"MW_VERP_KEYS": "0123456789abcdef-key", "FBL_PASSWORD": "imap-secret",
	}
	getenv := func(k string) string { return vars[k] }
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"-check-config"}, getenv, &out, &errb); err != nil {
		t.Fatalf("check-config: %v\n%s", err, errb.String())
	}
	if !strings.Contains(out.String(), "configuration ok") || strings.Contains(out.String(), "imap-secret") ||
		strings.Contains(out.String(), "0123456789abcdef-key") {
		t.Errorf("output %q", out.String())
	}
	delete(vars, "FBL_PASSWORD")
	err := run(context.Background(), []string{"-check-config"}, getenv, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "MW_FBL_MAILBOXES") {
		t.Errorf("without the password: %v, want an error naming MW_FBL_MAILBOXES", err)
	}
}
