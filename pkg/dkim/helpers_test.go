package dkim_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mailwave/mailwave/pkg/dkim"

	msgauth "github.com/emersion/go-msgauth/dkim"
)

// Test keys are made per test binary rather than committed: no private
// key, even a test one, lives in the repository.
var testKeys = sync.OnceValues(func() (*rsa.PrivateKey, ed25519.PrivateKey) {
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	_, e, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return r, e
})

// pemOf encodes a key: "pkcs1" or "pkcs8".
func pemOf(t testing.TB, key any, form string) []byte {
	t.Helper()
	if form == "pkcs1" {
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))})
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func rsaKey(t testing.TB, domain, selector string) *dkim.Key {
	t.Helper()
	r, _ := testKeys()
	k, err := dkim.ParseKey(domain, selector, pemOf(t, r, "pkcs1"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func edKey(t testing.TB, domain, selector string) *dkim.Key {
	t.Helper()
	_, e := testKeys()
	k, err := dkim.ParseKey(domain, selector, pemOf(t, e, "pkcs8"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// lookup is the DNS of a verifier that knows the keys' records: one TXT
// record per name, its strings joined as a resolver joins them.
func lookup(keys ...*dkim.Key) func(string) ([]string, error) {
	records := map[string][]string{}
	for _, k := range keys {
		records[k.RecordName()] = append(records[k.RecordName()], strings.Join(k.TXT(), ""))
	}
	return func(name string) ([]string, error) {
		if r, ok := records[strings.TrimSuffix(name, ".")]; ok {
			return r, nil
		}
		return nil, &msgauthNotFound{name}
	}
}

type msgauthNotFound struct{ name string }

func (e *msgauthNotFound) Error() string { return "no TXT record at " + e.name }

func verify(t testing.TB, signed []byte, keys ...*dkim.Key) []*msgauth.Verification {
	t.Helper()
	vs, err := msgauth.VerifyWithOptions(strings.NewReader(string(signed)), &msgauth.VerifyOptions{LookupTXT: lookup(keys...)})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return vs
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
