package dkim_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/mailwave/mailwave/pkg/dkim"
)

// tags reads the tags of the first DKIM-Signature field of a message.
func tags(t testing.TB, signed []byte) map[string]string {
	t.Helper()
	s := string(signed)
	if !strings.HasPrefix(s, "DKIM-Signature:") {
		t.Fatalf("message does not start with a DKIM-Signature field: %.60q", s)
	}
	// The field ends at the first line that does not continue it.
	end := strings.Index(s, "\r\n")
	for end >= 0 && end+2 < len(s) && (s[end+2] == ' ' || s[end+2] == '\t') {
		next := strings.Index(s[end+2:], "\r\n")
		end = end + 2 + next
	}
	v := strings.TrimPrefix(s[:end], "DKIM-Signature:")
	out := map[string]string{}
	for _, kv := range strings.Split(v, ";") {
		k, val, _ := strings.Cut(kv, "=")
		out[strings.TrimSpace(k)] = strings.Join(strings.Fields(val), "")
	}
	return out
}

func TestSignVerifies(t *testing.T) {
	msg := readFile(t, "newsletter.eml")
	tests := []struct {
		name string
		key  *dkim.Key
		algo string
	}{
		{"rsa-2048", rsaKey(t, "example.com", "rsa2026"), "rsa-sha256"},
		{"ed25519", edKey(t, "example.com", "ed2026"), "ed25519-sha256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := dkim.NewSigner(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			signed, err := s.Sign("example.com", nil, msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasSuffix(signed, msg) {
				t.Fatal("the signed message does not end with the original")
			}
			vs := verify(t, signed, tt.key)
			if len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "example.com" {
				t.Fatalf("verifications %+v, err %v", vs, vs[0].Err)
			}
			tg := tags(t, signed)
			if tg["a"] != tt.algo || tg["c"] != "relaxed/relaxed" || tg["d"] != "example.com" || tg["s"] != tt.key.Selector() {
				t.Errorf("tags %v", tg)
			}
			// Present fields signed once each, From once more, absent and
			// unlisted fields (Return-Path, X-Mailer, Cc) not at all.
			want := "From:From:Subject:Date:To:List-Unsubscribe:List-Unsubscribe-Post:Message-ID:MIME-Version:Content-Type:Feedback-ID"
			if tg["h"] != want {
				t.Errorf("h=%s\nwant %s", tg["h"], want)
			}
		})
	}
}

func TestDualSignature(t *testing.T) {
	msg := readFile(t, "newsletter.eml")
	r, e := rsaKey(t, "example.com", "rsa2026"), edKey(t, "example.com", "ed2026")
	s, err := dkim.NewSigner(r, e, edKey(t, "other.example", "ed2026"))
	if err != nil {
		t.Fatal(err)
	}
	signed, err := s.Sign("example.com", []string{"ed2026", "rsa2026"}, msg)
	if err != nil {
		t.Fatal(err)
	}
	if tg := tags(t, signed); tg["s"] != "ed2026" {
		t.Errorf("first signature is %s's, want ed2026's (the order asked)", tg["s"])
	}
	vs := verify(t, signed, r, e)
	if len(vs) != 2 {
		t.Fatalf("%d signatures, want 2", len(vs))
	}
	for _, v := range vs {
		if v.Err != nil {
			t.Errorf("signature of %s: %v", v.Domain, v.Err)
		}
	}
	// No selectors: every key of the domain signs, and only those.
	all, err := s.Sign("EXAMPLE.com.", nil, msg)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(all, []byte("DKIM-Signature:")); n != 2 {
		t.Errorf("%d signatures with every selector, want 2", n)
	}
}

func TestTamperedFails(t *testing.T) {
	msg := readFile(t, "newsletter.eml")
	k := edKey(t, "example.com", "ed2026")
	s, err := dkim.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := s.Sign("example.com", nil, msg)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(string) string
		ok     bool
	}{
		{"untouched", func(s string) string { return s }, true},
		{"relaxed: trailing space and refolding", func(s string) string {
			s = strings.Replace(s, "three things worth reading.</p>", "three things worth reading.</p>   ", 1)
			return strings.Replace(s, "Subject: =?UTF-8", "Subject:\r\n  =?UTF-8", 1)
		}, true},
		{"body changed", func(s string) string { return strings.Replace(s, "three things", "four things", 1) }, false},
		{"subject changed", func(s string) string { return strings.Replace(s, "November_news", "December_news", 1) }, false},
		{"second From added", func(s string) string {
			return strings.Replace(s, "To: reader@gmail.com\r\n", "To: reader@gmail.com\r\nFrom: attacker@evil.example\r\n", 1)
		}, false},
		{"unsubscribe link changed", func(s string) string { return strings.Replace(s, "/u/a1b2c3", "/u/zzzzzz", 1) }, false},
		{"unsigned field added", func(s string) string {
			return strings.Replace(s, "X-Mailer: Mailwave\r\n", "X-Mailer: Mailwave\r\nX-Relay: yes\r\n", 1)
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vs := verify(t, []byte(tt.change(string(signed))), k)
			if len(vs) != 1 {
				t.Fatalf("%d verifications", len(vs))
			}
			if ok := vs[0].Err == nil; ok != tt.ok {
				t.Errorf("verified = %v (%v), want %v", ok, vs[0].Err, tt.ok)
			}
		})
	}
}

func TestBareLFMessage(t *testing.T) {
	msg := bytes.ReplaceAll(readFile(t, "newsletter.eml"), []byte("\r\n"), []byte("\n"))
	k := rsaKey(t, "example.com", "rsa2026")
	s, _ := dkim.NewSigner(k)
	signed, err := s.Sign("example.com", nil, msg)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(signed, []byte("\r")) {
		t.Error("the signature field of a bare-LF message has CRs")
	}
	if vs := verify(t, signed, k); vs[0].Err != nil {
		t.Errorf("bare-LF message: %v", vs[0].Err)
	}
	// The same signature holds once the message is sent with CRLF.
	if vs := verify(t, bytes.ReplaceAll(signed, []byte("\n"), []byte("\r\n")), k); vs[0].Err != nil {
		t.Errorf("bare-LF message sent with CRLF: %v", vs[0].Err)
	}
}

func TestHeaderLists(t *testing.T) {
	msg := readFile(t, "newsletter.eml")
	k := edKey(t, "example.com", "ed2026")
	s, _ := dkim.NewSigner(k)
	s.Headers = []string{"Subject", "Date"}
	s.Oversign = []string{}
	signed, err := s.Sign("example.com", nil, msg)
	if err != nil {
		t.Fatal(err)
	}
	if h := tags(t, signed)["h"]; h != "Subject:Date:From" {
		t.Errorf("h=%s, want Subject:Date:From (From is always signed)", h)
	}
	if vs := verify(t, signed, k); vs[0].Err != nil {
		t.Error(vs[0].Err)
	}
	s.Headers = nil
	s.Oversign = []string{"From", "Subject", "Reply-To"}
	signed, err = s.Sign("example.com", nil, msg)
	if err != nil {
		t.Fatal(err)
	}
	if h := tags(t, signed)["h"]; !strings.HasPrefix(h, "From:From:Reply-To:Subject:Subject:Date") {
		t.Errorf("h=%s, want From, Reply-To (absent) and Subject oversigned", h)
	}
}

func TestSignErrors(t *testing.T) {
	k := edKey(t, "example.com", "ed2026")
	s, _ := dkim.NewSigner(k)
	good := "From: a@example.com\r\nTo: b@example.org\r\n\r\nbody\r\n"
	tests := []struct {
		name, domain string
		selectors    []string
		msg          string
		want         error
	}{
		{"unknown domain", "example.org", nil, good, dkim.ErrNoKey},
		{"unknown selector", "example.com", []string{"ed2026", "old"}, good, dkim.ErrNoKey},
		{"no From", "example.com", nil, "To: b@example.org\r\n\r\nbody\r\n", dkim.ErrMessage},
		{"header line without colon", "example.com", nil, "From: a@example.com\r\nnonsense\r\n\r\nbody\r\n", dkim.ErrMessage},
		{"continuation first", "example.com", nil, " folded\r\nFrom: a@example.com\r\n\r\n", dkim.ErrMessage},
		{"empty message", "example.com", nil, "", dkim.ErrMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Sign(tt.domain, tt.selectors, []byte(tt.msg)); !errors.Is(err, tt.want) {
				t.Errorf("Sign: %v, want %v", err, tt.want)
			}
		})
	}
	// A message with no body at all is still signed (empty body hash).
	if _, err := s.Sign("example.com", nil, []byte("From: a@example.com\r\n\r\n")); err != nil {
		t.Errorf("header-only message: %v", err)
	}
}

// Select answers before signing which keys would sign, so a caller can
// decide about a missing key first; SignWith then signs as Sign would.
func TestSelectThenSignWith(t *testing.T) {
	msg := readFile(t, "newsletter.eml")
	r, e := rsaKey(t, "example.com", "rsa2026"), edKey(t, "example.com", "ed2026")
	s, err := dkim.NewSigner(r, e)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := s.Select("example.com", []string{"rsa2026"})
	if err != nil || len(keys) != 1 || keys[0].Selector() != "rsa2026" {
		t.Fatalf("Select = %v, %v", keys, err)
	}
	if _, err := s.Select("example.com", []string{"rsa2026", "gone"}); !errors.Is(err, dkim.ErrNoKey) {
		t.Errorf("Select with a missing selector: %v", err)
	}
	all, err := s.Select("example.com", nil)
	if err != nil || len(all) != 2 {
		t.Fatalf("Select(nil) = %v, %v", all, err)
	}
	signed, err := s.SignWith(all, msg)
	if err != nil {
		t.Fatal(err)
	}
	vs := verify(t, signed, r, e)
	if len(vs) != 2 || vs[0].Err != nil || vs[1].Err != nil {
		t.Fatalf("verifications %+v", vs)
	}
	if _, err := s.SignWith(nil, msg); !errors.Is(err, dkim.ErrNoKey) {
		t.Errorf("SignWith(no keys): %v", err)
	}
}
