package dkim

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Errors of this package.
var (
	// ErrKey: a key file does not hold a usable private key (not PEM, an
	// unsupported type or algorithm, an RSA key below 1024 or above 4096
	// bits).
	ErrKey = errors.New("dkim: invalid key")
	// ErrName: a domain or selector is not a DNS name, or a key file's name
	// is not <selector>._domainkey.<domain>.pem.
	ErrName = errors.New("dkim: invalid name")
	// ErrNoKey: no key for the domain or selector asked for, or a key
	// folder without keys.
	ErrNoKey = errors.New("dkim: no key")
	// ErrDuplicateKey: two keys for one domain and selector.
	ErrDuplicateKey = errors.New("dkim: duplicate key")
	// ErrMessage: the message cannot be signed (a header line without a
	// colon, no From field).
	ErrMessage = errors.New("dkim: invalid message")
)

// RSA key sizes accepted: RFC 8301 §3.2 forbids signing with less than
// 1024 bits; above 4096 verifiers need not cope.
const minRSABits, maxRSABits = 1024, 4096

// Key is a private signing key for one domain and selector. It is
// immutable and prints without its secret.
type Key struct {
	domain, selector string
	signer           crypto.Signer
	algorithm        string // "rsa" or "ed25519", as in the k= tag
	bits             int
}

// ParseKey reads a PEM private key (PKCS#1 RSA, or PKCS#8 RSA or Ed25519)
// for domain and selector. Errors wrap ErrKey or ErrName; they never quote
// key material.
func ParseKey(domain, selector string, pemData []byte) (*Key, error) {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	if !isDNSName(domain) {
		return nil, fmt.Errorf("%w: domain %q", ErrName, domain)
	}
	if !isDNSName(selector) {
		return nil, fmt.Errorf("%w: selector %q", ErrName, selector)
	}
	block, rest := pem.Decode(pemData)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrKey)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: more than one PEM block", ErrKey)
	}
	var parsed any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		parsed, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%w: PEM type %q, want \"RSA PRIVATE KEY\" or \"PRIVATE KEY\"", ErrKey, block.Type)
	}
	if err != nil {
		// The x509 errors describe the structure, never the key's bytes.
		return nil, fmt.Errorf("%w: %s: %v", ErrKey, block.Type, err)
	}
	k := &Key{domain: domain, selector: selector}
	switch p := parsed.(type) {
	case *rsa.PrivateKey:
		k.bits = p.N.BitLen()
		if k.bits < minRSABits || k.bits > maxRSABits {
			return nil, fmt.Errorf("%w: RSA key of %d bits, want %d to %d", ErrKey, k.bits, minRSABits, maxRSABits)
		}
		k.signer, k.algorithm = p, "rsa"
	case ed25519.PrivateKey:
		k.signer, k.algorithm, k.bits = p, "ed25519", 256
	default:
		return nil, fmt.Errorf("%w: %T keys are not used for DKIM", ErrKey, parsed)
	}
	return k, nil
}

// GenerateEd25519 makes a new Ed25519 key (RFC 8463) for domain and
// selector: for a signer whose key is made where it runs and published at
// once, such as the simulator's feedback loops. Errors wrap ErrName.
func GenerateEd25519(domain, selector string) (*Key, error) {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	if !isDNSName(domain) {
		return nil, fmt.Errorf("%w: domain %q", ErrName, domain)
	}
	if !isDNSName(selector) {
		return nil, fmt.Errorf("%w: selector %q", ErrName, selector)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("dkim: generate key: %w", err)
	}
	return &Key{domain: domain, selector: selector, signer: priv, algorithm: "ed25519", bits: 256}, nil
}

// LoadKey reads a PEM key file for domain and selector. Errors name the
// file.
func LoadKey(domain, selector, path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	k, err := ParseKey(domain, selector, b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// LoadDir reads every key of a folder laid out as
// <selector>._domainkey.<domain>.pem (see the package documentation), in
// name order. Errors name the file; a folder without keys is an error
// wrapping ErrNoKey.
func LoadDir(dir string) ([]*Key, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	var keys []*Key
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".pem") {
			continue
		}
		path := filepath.Join(dir, name)
		// Secret volumes mount each file as a link into ..data: follow it.
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("dkim: %w", err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		selector, domain, ok := strings.Cut(strings.TrimSuffix(name, ".pem"), "._domainkey.")
		if !ok {
			return nil, fmt.Errorf("%s: %w: want <selector>._domainkey.<domain>.pem", path, ErrName)
		}
		k, err := LoadKey(domain, selector, path)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no <selector>._domainkey.<domain>.pem file in %s", ErrNoKey, dir)
	}
	return keys, nil
}

// Domain returns the signing domain (the d= tag), in lower case.
func (k *Key) Domain() string { return k.domain }

// Selector returns the selector (the s= tag).
func (k *Key) Selector() string { return k.selector }

// Algorithm returns "rsa" or "ed25519", the key type of the k= tag.
func (k *Key) Algorithm() string { return k.algorithm }

// Bits returns the key size: the RSA modulus length, or 256 for Ed25519.
func (k *Key) Bits() int { return k.bits }

// RecordName returns the DNS name of the key's public record,
// <selector>._domainkey.<domain> (RFC 6376 §3.6.2.1), without the final
// dot.
func (k *Key) RecordName() string { return k.selector + "._domainkey." + k.domain }

// Record returns the public key record to publish as TXT at RecordName
// (RFC 6376 §3.6.1): "v=DKIM1; k=rsa; p=<SubjectPublicKeyInfo, base64>" or,
// per RFC 8463 §4.2, "v=DKIM1; k=ed25519; p=<raw public key, base64>".
func (k *Key) Record() string {
	var p []byte
	switch pub := k.signer.Public().(type) {
	case ed25519.PublicKey:
		p = pub
	default:
		// A public key of a key that parsed always marshals.
		p, _ = x509.MarshalPKIXPublicKey(pub)
	}
	return "v=DKIM1; k=" + k.algorithm + "; p=" + base64.StdEncoding.EncodeToString(p)
}

// TXT returns Record split into the character strings of one TXT record,
// at most 255 bytes each (RFC 1035 §3.3.14); a verifier joins them (RFC
// 6376 §3.6.2.2).
func (k *Key) TXT() []string {
	r := k.Record()
	var out []string
	for len(r) > 255 {
		out = append(out, r[:255])
		r = r[255:]
	}
	return append(out, r)
}

// ZoneRecord returns the record as a line of a zone file:
// `<name>. TXT "…" "…"`.
func (k *Key) ZoneRecord() string {
	var b strings.Builder
	b.WriteString(k.RecordName())
	b.WriteString(". TXT")
	for _, s := range k.TXT() {
		b.WriteByte(' ')
		b.WriteString(strconv.Quote(s))
	}
	return b.String()
}

// String describes the key without its secret: "rsa-2048 key
// mw2026._domainkey.example.com".
func (k *Key) String() string {
	if k == nil {
		return "<nil dkim key>"
	}
	return k.algorithm + "-" + strconv.Itoa(k.bits) + " key " + k.RecordName()
}

// GoString is String, so that %#v prints no secret either.
func (k *Key) GoString() string { return k.String() }

// LogValue is String, for log/slog.
func (k *Key) LogValue() slog.Value { return slog.StringValue(k.String()) }

// isDNSName reports whether s is dot-separated labels of letters, digits,
// '-' and '_' (RFC 6376 §3.1 selectors; domains in A-label form).
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	return !slices.ContainsFunc(strings.Split(s, "."), func(l string) bool {
		if l == "" || len(l) > 63 {
			return true
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return true
			}
		}
		return false
	})
}
