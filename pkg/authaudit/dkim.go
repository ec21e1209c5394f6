package authaudit

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

// ErrKey is returned by ParsePrivateKey for a key it cannot use.
var ErrKey = errors.New("authaudit: unusable dkim key")

// Key sizes (RFC 8301 §3.2: verifiers ignore RSA keys under 1024 bits;
// signers SHOULD use at least 2048).
const (
	minRSABits         = 1024
	recommendedRSABits = 2048
)

// ParsePrivateKey reads a PEM private key for DKIM signing: PKCS #8 (RSA or
// Ed25519) or PKCS #1 RSA. It returns an error wrapping ErrKey.
func ParsePrivateKey(pemBytes []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrKey)
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrKey, err)
		}
		return k, nil
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrKey, err)
		}
		switch k := k.(type) {
		case *rsa.PrivateKey:
			return k, nil
		case ed25519.PrivateKey:
			return k, nil
		default:
			return nil, fmt.Errorf("%w: %T is neither RSA nor Ed25519", ErrKey, k)
		}
	default:
		return nil, fmt.Errorf("%w: PEM block %q", ErrKey, block.Type)
	}
}

// keyRecord is the DKIM key record (RFC 6376 §3.6.1) for a public key.
func keyRecord(pub crypto.PublicKey) (string, error) {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", err
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub), nil
	default:
		return "", fmt.Errorf("%w: %T", ErrKey, pub)
	}
}

// parseTags splits a DKIM tag-list (RFC 6376 §3.2) into its tags.
func parseTags(s string) (map[string]string, error) {
	tags := map[string]string{}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, value, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("tag %q has no '='", part)
		}
		name = strings.TrimSpace(name)
		if _, dup := tags[name]; dup {
			return nil, fmt.Errorf("tag %q appears twice", name)
		}
		tags[name] = strings.TrimSpace(value)
	}
	return tags, nil
}

// ParseKeyRecord parses a DKIM key record (RFC 6376 §3.6.1) and returns its
// public key: *rsa.PublicKey or ed25519.PublicKey. It returns an error
// wrapping ErrKey for a record that receivers cannot use.
func ParseKeyRecord(record string) (crypto.PublicKey, error) {
	pub, _, err := publishedKey(record)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	return pub, nil
}

// publishedKey parses the public key of a key record and returns its tags.
func publishedKey(record string) (crypto.PublicKey, map[string]string, error) {
	tags, err := parseTags(record)
	if err != nil {
		return nil, nil, err
	}
	if v, ok := tags["v"]; ok && v != "DKIM1" {
		return nil, tags, fmt.Errorf("version %q is not DKIM1", v)
	}
	p, ok := tags["p"]
	if !ok {
		return nil, tags, errors.New("no p= tag")
	}
	if p == "" {
		return nil, tags, errors.New("the key is revoked (empty p=)")
	}
	der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(p), ""))
	if err != nil {
		return nil, tags, fmt.Errorf("p= is not base64: %w", err)
	}
	switch k := tags["k"]; k {
	case "", "rsa":
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			// RFC 6376 erratum 3017: some publish a bare RSAPublicKey.
			rsaPub, err2 := x509.ParsePKCS1PublicKey(der)
			if err2 != nil {
				return nil, tags, fmt.Errorf("p= is not an RSA public key: %w", err)
			}
			return rsaPub, tags, nil
		}
		if _, ok := pub.(*rsa.PublicKey); !ok {
			return nil, tags, fmt.Errorf("k=rsa but p= holds a %T", pub)
		}
		return pub, tags, nil
	case "ed25519":
		if len(der) != ed25519.PublicKeySize {
			return nil, tags, fmt.Errorf("an Ed25519 key is %d bytes, not %d", ed25519.PublicKeySize, len(der))
		}
		return ed25519.PublicKey(der), tags, nil
	default:
		return nil, tags, fmt.Errorf("unknown key type k=%s", k)
	}
}

// checkDKIM audits the selector's key record (RFC 6376 §3.6) and, when the
// private key is known, that a signature made with it verifies against
// what is published.
func (a *Auditor) checkDKIM(ctx context.Context, n normalized, now time.Time) Check {
	c := Check{Name: CheckDKIM}
	problem := func(format string, args ...any) { c.Problems = append(c.Problems, fmt.Sprintf(format, args...)) }
	if n.Selector == "" {
		problem("no DKIM selector given: the key of %s cannot be checked", n.dkimDomain)
		return c
	}
	name := n.Selector + "._domainkey." + n.dkimDomain
	fix := func() {
		if n.DKIMKey == nil {
			c.Fix = txtRecord(name, "v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo of a new 2048-bit RSA key>")
			return
		}
		rec, err := keyRecord(n.DKIMKey.Public())
		if err != nil {
			problem("cannot derive the record from the private key: %v", err)
			return
		}
		c.Fix = txtRecord(name, rec)
	}

	txts, err := a.Resolver.LookupTXT(ctx, name)
	switch {
	case notFound(err):
		problem("no DKIM key is published at %s: receivers cannot verify signatures with selector %q", name, n.Selector)
		fix()
		return c
	case err != nil:
		problem("cannot look up %s: %v", name, err)
		return c
	case len(txts) > 1:
		problem("%s has %d TXT records: receivers' results are undefined (RFC 6376 §3.6.2.2); publish one", name, len(txts))
		fix()
		return c
	}
	pub, tags, err := publishedKey(txts[0])
	if err != nil {
		problem("the DKIM key record at %s is unusable: %v", name, err)
		fix()
		return c
	}
	needFix := false
	if rsaPub, ok := pub.(*rsa.PublicKey); ok {
		bits := rsaPub.N.BitLen()
		switch {
		case bits < minRSABits:
			problem("the RSA key at %s has %d bits: receivers ignore signatures made with keys under %d bits (RFC 8301 §3.2)", name, bits, minRSABits)
			needFix = true
		case bits < recommendedRSABits:
			problem("the RSA key at %s has %d bits: use %d bits (RFC 8301 §3.2)", name, bits, recommendedRSABits)
			needFix = true
		}
	}
	if flags, ok := tags["t"]; ok && strings.Contains(flags, "y") {
		problem("the key at %s is marked t=y (testing): receivers may treat its signatures as unsigned mail", name)
		needFix = true
	}
	if n.DKIMKey != nil {
		if !publicEqual(pub, n.DKIMKey.Public()) {
			problem("the key published at %s does not match the private key: every signature fails", name)
			needFix = true
		} else if err := a.verifyTestSignature(ctx, n, now); err != nil {
			problem("a test signature made with the private key does not verify against %s: %v", name, err)
		}
	}
	if needFix {
		fix()
	}
	return c
}

func publicEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// verifyTestSignature signs a small message with go-msgauth and verifies it
// through the auditor's resolver, as a receiver would.
func (a *Auditor) verifyTestSignature(ctx context.Context, n normalized, now time.Time) error {
	msg := "From: postmaster@" + n.from + "\r\n" +
		"To: postmaster@" + n.from + "\r\n" +
		"Subject: DKIM audit\r\n" +
		"Date: " + now.UTC().Format(time.RFC1123Z) + "\r\n" +
		"\r\n" +
		"Test signature of the authentication audit.\r\n"
	var signed bytes.Buffer
	opts := &dkim.SignOptions{
		Domain:     n.dkimDomain,
		Selector:   n.Selector,
		Signer:     n.DKIMKey,
		HeaderKeys: []string{"From", "To", "Subject", "Date"},
	}
	if err := dkim.Sign(&signed, strings.NewReader(msg), opts); err != nil {
		return err
	}
	vs, err := dkim.VerifyWithOptions(&signed, &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return a.Resolver.LookupTXT(ctx, name) },
	})
	if err != nil {
		return err
	}
	if len(vs) != 1 {
		return fmt.Errorf("%d signatures after signing once", len(vs))
	}
	return vs[0].Err
}
