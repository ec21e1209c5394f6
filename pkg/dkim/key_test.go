package dkim_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailwave/mailwave/pkg/dkim"
)

func TestParseKeyForms(t *testing.T) {
	r, e := testKeys()
	tests := []struct {
		name string
		pem  []byte
		algo string
		bits int
	}{
		{"rsa pkcs1", pemOf(t, r, "pkcs1"), "rsa", 2048},
		{"rsa pkcs8", pemOf(t, r, "pkcs8"), "rsa", 2048},
		{"ed25519 pkcs8", pemOf(t, e, "pkcs8"), "ed25519", 256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := dkim.ParseKey("Example.COM.", "s1", tt.pem)
			if err != nil {
				t.Fatal(err)
			}
			if k.Domain() != "example.com" || k.Selector() != "s1" || k.Algorithm() != tt.algo || k.Bits() != tt.bits {
				t.Errorf("key %v: domain %s, selector %s, algorithm %s, bits %d", k, k.Domain(), k.Selector(), k.Algorithm(), k.Bits())
			}
			if k.RecordName() != "s1._domainkey.example.com" {
				t.Errorf("RecordName = %s", k.RecordName())
			}
		})
	}
}

func TestRecord(t *testing.T) {
	r, e := testKeys()
	rk, ek := rsaKey(t, "example.com", "rsa2026"), edKey(t, "example.com", "ed2026")

	rec := rk.Record()
	p, ok := strings.CutPrefix(rec, "v=DKIM1; k=rsa; p=")
	if !ok {
		t.Fatalf("RSA record %q", rec)
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil || !r.PublicKey.Equal(pub) {
		t.Fatalf("RSA record's key: %v", err)
	}
	chunks := rk.TXT()
	if len(chunks) < 2 || strings.Join(chunks, "") != rec {
		t.Errorf("TXT() = %d strings, want the record split", len(chunks))
	}
	for _, c := range chunks {
		if len(c) > 255 {
			t.Errorf("TXT string of %d bytes", len(c))
		}
	}
	if z := rk.ZoneRecord(); !strings.HasPrefix(z, `rsa2026._domainkey.example.com. TXT "v=DKIM1; k=rsa; p=`) || strings.Count(z, `"`) != 2*len(chunks) {
		t.Errorf("ZoneRecord = %s", z)
	}

	want := "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(e.Public().(ed25519.PublicKey))
	if got := ek.Record(); got != want {
		t.Errorf("Ed25519 record %q, want %q (RFC 8463: the raw key)", got, want)
	}
	if len(ek.TXT()) != 1 {
		t.Errorf("Ed25519 TXT() = %q, want one string", ek.TXT())
	}
}

func TestParseKeyErrors(t *testing.T) {
	r, e := testKeys()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := pemOf(t, e, "pkcs8")
	tests := []struct {
		name             string
		domain, selector string
		pem              []byte
		want             error
	}{
		{"not PEM", "example.com", "s1", []byte("hello"), dkim.ErrKey},
		{"certificate", "example.com", "s1", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), dkim.ErrKey},
		{"garbage inside", "example.com", "s1", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), dkim.ErrKey},
		{"pkcs1 label on pkcs8", "example.com", "s1", bytes.Replace(pemOf(t, r, "pkcs8"), []byte("PRIVATE KEY"), []byte("RSA PRIVATE KEY"), 2), dkim.ErrKey},
		{"ECDSA", "example.com", "s1", pemOf(t, ec, "pkcs8"), dkim.ErrKey},
		{"two blocks", "example.com", "s1", append(append([]byte{}, good...), good...), dkim.ErrKey},
		{"bad domain", "exa mple.com", "s1", good, dkim.ErrName},
		{"empty domain", "", "s1", good, dkim.ErrName},
		{"bad selector", "example.com", "s/1", good, dkim.ErrName},
		{"empty selector label", "example.com", "a..b", good, dkim.ErrName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := dkim.ParseKey(tt.domain, tt.selector, tt.pem); !errors.Is(err, tt.want) {
				t.Errorf("ParseKey: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestLoadKeyNamesTheFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "broken.pem")
	if err := os.WriteFile(path, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := dkim.LoadKey("example.com", "s1", path)
	if !errors.Is(err, dkim.ErrKey) || !strings.Contains(err.Error(), path) {
		t.Errorf("LoadKey: %v", err)
	}
	_, err = dkim.LoadKey("example.com", "s1", filepath.Join(dir, "missing.pem"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.pem") {
		t.Errorf("LoadKey of a missing file: %v", err)
	}
}

// TestLoadDirSecretVolume loads a folder laid out as Kubernetes mounts a
// Secret: files are links into a timestamped folder behind ..data.
func TestLoadDirSecretVolume(t *testing.T) {
	r, e := testKeys()
	dir := t.TempDir()
	data := filepath.Join(dir, "..2026_11_03_09_00_00.123456789")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"rsa2026._domainkey.example.com.pem": pemOf(t, r, "pkcs1"),
		"ed2026._domainkey.example.com.pem":  pemOf(t, e, "pkcs8"),
		"mw._domainkey.news.example.org.pem": pemOf(t, e, "pkcs8"),
		"README.txt":                         []byte("not a key"),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(data, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(data), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := dkim.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range keys {
		got = append(got, k.String())
	}
	want := "ed25519-256 key ed2026._domainkey.example.com, ed25519-256 key mw._domainkey.news.example.org, rsa-2048 key rsa2026._domainkey.example.com"
	if strings.Join(got, ", ") != want {
		t.Errorf("LoadDir = %s\nwant %s", strings.Join(got, ", "), want)
	}
	s, err := dkim.NewSigner(keys...)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Keys("example.com")) != 2 || len(s.Keys("news.example.org")) != 1 || len(s.Keys("")) != 3 {
		t.Errorf("signer keys: %v", s)
	}
}

func TestLoadDirErrors(t *testing.T) {
	_, e := testKeys()
	t.Run("bad name", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "example.com.pem")
		if err := os.WriteFile(path, pemOf(t, e, "pkcs8"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := dkim.LoadDir(dir); !errors.Is(err, dkim.ErrName) || !strings.Contains(err.Error(), path) {
			t.Errorf("LoadDir: %v", err)
		}
	})
	t.Run("bad key", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "s1._domainkey.example.com.pem")
		if err := os.WriteFile(path, []byte("not a key"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := dkim.LoadDir(dir); !errors.Is(err, dkim.ErrKey) || !strings.Contains(err.Error(), path) {
			t.Errorf("LoadDir: %v", err)
		}
	})
	t.Run("no keys", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := dkim.LoadDir(dir); !errors.Is(err, dkim.ErrNoKey) {
			t.Errorf("LoadDir: %v", err)
		}
	})
	t.Run("missing folder", func(t *testing.T) {
		if _, err := dkim.LoadDir(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("LoadDir: %v", err)
		}
	})
}

func TestDuplicateKey(t *testing.T) {
	_, err := dkim.NewSigner(edKey(t, "example.com", "s1"), rsaKey(t, "EXAMPLE.com", "s1"))
	if !errors.Is(err, dkim.ErrDuplicateKey) {
		t.Errorf("NewSigner: %v, want ErrDuplicateKey", err)
	}
}

// TestNoSecretPrinted prints keys and signers every way a log might, and
// looks for any piece of the private keys' PEM.
func TestNoSecretPrinted(t *testing.T) {
	r, e := testKeys()
	rk, ek := rsaKey(t, "example.com", "rsa2026"), edKey(t, "example.com", "ed2026")
	s, err := dkim.NewSigner(rk, ek)
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logged, nil))
	log.Info("keys", "rsa", rk, "ed", ek, "signer", s)
	cfg := struct {
		Signer *dkim.Signer
		Keys   []*dkim.Key
	}{s, []*dkim.Key{rk, ek}}
	out := []string{
		logged.String(),
		fmt.Sprintf("%v %+v %#v %s %q %x", rk, rk, rk, rk, rk, rk),
		fmt.Sprintf("%v %+v %#v %s", ek, ek, ek, ek),
		fmt.Sprintf("%v %+v %#v %s", s, s, s, s),
		fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg),
	}
	for _, secret := range [][]byte{pemOf(t, r, "pkcs1"), pemOf(t, r, "pkcs8"), pemOf(t, e, "pkcs8")} {
		lines := strings.Split(string(secret), "\n")
		for _, line := range lines[1 : len(lines)-2] { // the base64 lines
			if len(line) < 16 {
				continue // the short tail of the last line proves nothing
			}
			for _, o := range out {
				if strings.Contains(o, line[:16]) {
					t.Fatalf("private key material printed: %s", o)
				}
			}
		}
	}
	for _, o := range out[1:] {
		if !strings.Contains(o, "example.com") {
			t.Errorf("printed form names no key: %s", o)
		}
	}
	if s.String() != "dkim signer [ed25519-256 key ed2026._domainkey.example.com, rsa-2048 key rsa2026._domainkey.example.com]" {
		t.Errorf("Signer.String() = %s", s)
	}
}

// A generated key signs, and its published record verifies the signature.
func TestGenerateEd25519(t *testing.T) {
	k, err := dkim.GenerateEd25519("Example.COM.", "gen")
	if err != nil {
		t.Fatal(err)
	}
	if k.Domain() != "example.com" || k.Algorithm() != "ed25519" || len(k.TXT()) != 1 {
		t.Fatalf("key %s, %d TXT strings", k, len(k.TXT()))
	}
	s, err := dkim.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := s.Sign("example.com", nil, readFile(t, "newsletter.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if vs := verify(t, signed, k); len(vs) != 1 || vs[0].Err != nil {
		t.Errorf("verifications %v", vs)
	}
	if _, err := dkim.GenerateEd25519("example.com", "bad selector"); !errors.Is(err, dkim.ErrName) {
		t.Errorf("bad selector: %v", err)
	}
}
