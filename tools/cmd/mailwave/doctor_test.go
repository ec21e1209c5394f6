package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mailwave/mailwave/pkg/spf/dnstest"
)

// doctorWorld serves a sending domain whose SPF misses one pool IP and that
// has no DMARC record; DKIM, reverse DNS and MX are right. It returns the
// server address and the path of the DKIM private key.
func doctorWorld(t *testing.T) (addr, keyPath string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	keyPath = filepath.Join(t.TempDir(), "dkim.pem")
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	z := dnstest.NewZone()
	z.TXT("example.com", "v=spf1 ip4:192.0.2.10 -all")
	z.MX("example.com", 10, "in.example.com")
	z.Addr("in.example.com", netip.MustParseAddr("198.51.100.25"))
	z.TXT("s1._domainkey.example.com", "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(pub))
	for _, s := range []string{"192.0.2.10", "192.0.2.11"} {
		ip := netip.MustParseAddr(s)
		z.ReversePTR(ip, "mta.example.com")
		z.Addr("mta.example.com", ip)
	}
	srv, err := dnstest.Start(z)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv.Addr(), keyPath
}

func TestDoctorJSON(t *testing.T) {
	addr, keyPath := doctorWorld(t)
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"doctor", "example.com", "--ips", "192.0.2.10,192.0.2.11",
		"--selector", "s1", "--dkim-key", keyPath, "--ehlo", "mta.example.com", "--dns", addr, "--json"}, &stdout, &stderr)
	if !errors.Is(err, errDoctorFailed) {
		t.Fatalf("run = %v, want errDoctorFailed (stderr %s)", err, stderr.String())
	}

	// The exact shape: {"domain", "checks": [{"name", "ok", "problems", "fix"}]}.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(stdout.Bytes(), &raw); err != nil {
		t.Fatalf("%v\n%s", err, stdout.String())
	}
	if keys := sortedKeys(raw); !slices.Equal(keys, []string{"checks", "domain"}) {
		t.Errorf("top-level keys %v", keys)
	}
	var domain string
	if err := json.Unmarshal(raw["domain"], &domain); err != nil || domain != "example.com" {
		t.Errorf("domain %s (%v)", raw["domain"], err)
	}
	var checks []map[string]json.RawMessage
	if err := json.Unmarshal(raw["checks"], &checks); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"spf": false, "dkim": true, "dmarc": false, "ptr": true, "mx": true}
	var names []string
	for _, c := range checks {
		if keys := sortedKeys(c); !slices.Equal(keys, []string{"fix", "name", "ok", "problems"}) {
			t.Errorf("check keys %v", keys)
		}
		var name, fix string
		var ok bool
		var problems []string
		if json.Unmarshal(c["name"], &name) != nil || json.Unmarshal(c["ok"], &ok) != nil ||
			json.Unmarshal(c["fix"], &fix) != nil || json.Unmarshal(c["problems"], &problems) != nil {
			t.Fatalf("check with wrong types: %v", c)
		}
		if string(c["problems"]) == "null" {
			t.Errorf("%s: problems is null, want a list", name)
		}
		names = append(names, name)
		if ok != want[name] {
			t.Errorf("%s: ok=%v, want %v (problems %q)", name, ok, want[name], problems)
		}
		if ok != (len(problems) == 0) {
			t.Errorf("%s: ok=%v with %d problems", name, ok, len(problems))
		}
		switch name {
		case "spf":
			if fix != `example.com. TXT "v=spf1 ip4:192.0.2.11 ip4:192.0.2.10 -all"` {
				t.Errorf("spf fix %q", fix)
			}
		case "dmarc":
			if fix != `_dmarc.example.com. TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com"` {
				t.Errorf("dmarc fix %q", fix)
			}
		}
	}
	if !slices.Equal(names, []string{"spf", "dkim", "dmarc", "ptr", "mx"}) {
		t.Errorf("checks %v", names)
	}
}

func TestDoctorText(t *testing.T) {
	addr, keyPath := doctorWorld(t)
	var stdout, stderr bytes.Buffer
	// Flags before the domain work too.
	err := run(context.Background(), []string{"doctor", "--dns", addr, "--ips", "192.0.2.10", "--selector", "s1",
		"--dkim-key", keyPath, "example.com"}, &stdout, &stderr)
	if !errors.Is(err, errDoctorFailed) {
		t.Fatalf("run = %v, want errDoctorFailed", err)
	}
	out := stdout.String()
	for _, want := range []string{
		"Authentication of example.com",
		"spf    ok",
		"dkim   ok",
		"dmarc  PROBLEM",
		"  - no DMARC record at _dmarc.example.com",
		"  publish:\n    _dmarc.example.com. TXT \"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com\"",
		"ptr    ok",
		"mx     ok",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestDoctorArguments(t *testing.T) {
	tests := map[string][]string{
		"no domain":    {"doctor", "--json"},
		"two domains":  {"doctor", "a.example", "b.example"},
		"bad ip":       {"doctor", "example.com", "--ips", "192.0.2.300"},
		"missing key":  {"doctor", "example.com", "--dkim-key", filepath.Join(t.TempDir(), "none.pem")},
		"unknown flag": {"doctor", "example.com", "--frobnicate"},
		"bad domain":   {"doctor", "localhost", "--dns", "127.0.0.1:1"},
	}
	for name, args := range tests {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), args, &stdout, &stderr)
			if err == nil || errors.Is(err, errDoctorFailed) {
				t.Errorf("run(%q) = %v, want an argument error", args, err)
			}
		})
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
