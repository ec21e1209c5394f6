package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// env is a getenv over a map, with the settings every case needs.
func env(extra map[string]string) func(string) string {
	m := map[string]string{"NATS_URL": "nats://127.0.0.1:4222", "MW_HELO_NAME": "mta1.example.com"}
	for k, v := range extra {
		m[k] = v
	}
	return func(k string) string { return m[k] }
}

func keyDir(t *testing.T) string {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "s1._domainkey.example.com.pem"),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestCheckConfig: each new setting is validated at start, and a mistake
// stops the sender with a message naming the variable.
func TestCheckConfig(t *testing.T) {
	t.Setenv("TEST_RELAY_PASSWORD", "hunter2-from-env")
	bad := filepath.Join(t.TempDir(), "bad.pem._domainkey.example.com.pem")
	if err := os.WriteFile(bad, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string // substring; empty: valid
	}{
		{name: "defaults", env: nil},
		{name: "dkim keys", env: map[string]string{"MW_DKIM_KEYS": keyDir(t), "MW_DKIM_MISSING_KEY": "send"}},
		{name: "dkim folder missing", env: map[string]string{"MW_DKIM_KEYS": "/nonexistent/dkim"}, wantErr: "MW_DKIM_KEYS"},
		{name: "dkim folder with a broken key", env: map[string]string{"MW_DKIM_KEYS": filepath.Dir(bad)}, wantErr: "MW_DKIM_KEYS"},
		{name: "dkim missing-key policy", env: map[string]string{"MW_DKIM_MISSING_KEY": "bounce"}, wantErr: "MW_DKIM_MISSING_KEY"},
		{name: "dkim reload too fast", env: map[string]string{"MW_DKIM_RELOAD": "10ms"}, wantErr: "MW_DKIM_RELOAD"},
		{name: "lease ttl", env: map[string]string{"MW_CONN_LEASE_TTL": "1s"}, wantErr: "MW_CONN_LEASE_TTL"},
		{name: "relay routes", env: map[string]string{"MW_RELAY_ROUTES": "testdata/relay-ok.yaml"}},
		{name: "relay unknown field", env: map[string]string{"MW_RELAY_ROUTES": "testdata/relay-unknown-field.yaml"}, wantErr: "field smarthost not found"},
		{name: "relay auth in plaintext", env: map[string]string{"MW_RELAY_ROUTES": "testdata/relay-auth-plaintext.yaml"}, wantErr: "routes.legacy: smarthosts[0]: auth: credentials are only sent over TLS"},
		{name: "relay password env unset", env: map[string]string{"MW_RELAY_ROUTES": "testdata/relay-missing-env.yaml"}, wantErr: "TEST_RELAY_UNSET is not set"},
		{name: "relay unknown route", env: map[string]string{"MW_RELAY_ROUTES": "testdata/relay-unknown-route.yaml"}, wantErr: `select[0]: route "espp"`},
		{name: "relay bad address", env: map[string]string{"MW_RELAY_ROUTES": "testdata/relay-bad-address.yaml"}, wantErr: "want host:port"},
		{name: "relay bad name", env: map[string]string{"MW_RELAY_ROUTES": "testdata/relay-bad-name.yaml"}, wantErr: "routes.ESP_A"},
		{name: "relay file missing", env: map[string]string{"MW_RELAY_ROUTES": "testdata/nope.yaml"}, wantErr: "MW_RELAY_ROUTES"},
		{name: "require tls", env: map[string]string{"MW_REQUIRE_TLS_DOMAINS": "bank.example,corp.example"}},
		{name: "require tls not a domain", env: map[string]string{"MW_REQUIRE_TLS_DOMAINS": "ops@bank.example"}, wantErr: "MW_REQUIRE_TLS_DOMAINS"},
		{name: "socks", env: map[string]string{"MW_SOCKS_PROXIES": "192.0.2.10=egress-a:1080, 192.0.2.11=egress-b:1080",
			"MW_SOCKS_USERNAME": "mw", "MW_SOCKS_PASSWORD": "socks-pw"}},
		{name: "socks bad ip", env: map[string]string{"MW_SOCKS_PROXIES": "mta1=egress:1080"}, wantErr: "MW_SOCKS_PROXIES"},
		{name: "socks inline credentials", env: map[string]string{"MW_SOCKS_PROXIES": "192.0.2.10=socks5://u:p@egress:1080"}, wantErr: "MW_SOCKS_USERNAME and MW_SOCKS_PASSWORD"},
		{name: "socks twice", env: map[string]string{"MW_SOCKS_PROXIES": "192.0.2.10=a:1080,192.0.2.10=b:1080"}, wantErr: "two proxies"},
		{name: "socks password without user", env: map[string]string{"MW_SOCKS_PASSWORD": "pw"}, wantErr: "MW_SOCKS_USERNAME"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(t.Context(), []string{"-check-config"}, env(tc.env), &out, &errOut)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("run: %v", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("run: %v, want an error containing %q", err, tc.wantErr)
			}
			// Secrets never reach the output or the error.
			all := out.String() + errOut.String()
			if err != nil {
				all += err.Error()
			}
			for _, secret := range []string{"socks-pw", "hunter2", "-----BEGIN"} {
				if strings.Contains(all, secret) {
					t.Errorf("output quotes a secret (%s): %s", secret, all)
				}
			}
		})
	}
}
