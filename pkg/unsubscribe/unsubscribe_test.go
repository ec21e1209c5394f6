package unsubscribe_test

import (
	"encoding/base64"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/mailwave/mailwave/pkg/unsubscribe"
)

var (
	key1 = []byte("0123456789abcdef-one")
	key2 = []byte("0123456789abcdef-two")
	sub  = unsubscribe.Subject{Tenant: "acme", Brand: "shop", CommunicationType: "weekly-digest",
		Address: "ana@example.com", MessageID: "0123abcd", CampaignID: "nov-26"}
)

func TestRoundTripAndRotation(t *testing.T) {
	old, _ := unsubscribe.NewSigner(key1)
	tok := old.Token(sub)
	if strings.ContainsAny(tok, "+/=") {
		t.Fatalf("token %q is not URL safe", tok)
	}
	// After rotation the new key signs and the old one still verifies.
	rotated, _ := unsubscribe.NewSigner(key2, key1)
	for _, s := range []*unsubscribe.Signer{old, rotated} {
		got, err := s.Verify(tok)
		if err != nil || got != sub {
			t.Fatalf("%+v %v", got, err)
		}
	}
	other, _ := unsubscribe.NewSigner(key2)
	if _, err := other.Verify(tok); !errors.Is(err, unsubscribe.ErrBadSignature) {
		t.Fatalf("another key verified: %v", err)
	}
}

// Changing any byte of a token makes it fail.
func TestTamperedTokensFail(t *testing.T) {
	s, _ := unsubscribe.NewSigner(key1)
	raw, _ := base64.RawURLEncoding.DecodeString(s.Token(sub))
	for i := range raw {
		b := append([]byte(nil), raw...)
		b[i] ^= 0x01
		if got, err := s.Verify(base64.RawURLEncoding.EncodeToString(b)); err == nil {
			t.Fatalf("byte %d altered, still verified: %+v", i, got)
		}
	}
	for _, tok := range []string{"", "!!!", "AAAA", strings.Repeat("A", 200)} {
		if _, err := s.Verify(tok); err == nil {
			t.Errorf("%q verified", tok)
		}
	}
}

func TestHeaders(t *testing.T) {
	link := unsubscribe.URL("https://u.shop.example/", "TOK")
	lu, post := unsubscribe.Headers(link, "unsubscribe@news.shop.example", "TOK")
	if lu != "<https://u.shop.example/u/TOK>, <mailto:unsubscribe@news.shop.example?subject=unsubscribe%20TOK>" {
		t.Errorf("List-Unsubscribe %q", lu)
	}
	if post != "List-Unsubscribe=One-Click" {
		t.Errorf("List-Unsubscribe-Post %q", post)
	}
	if lu, _ := unsubscribe.Headers(link, "", "TOK"); lu != "<https://u.shop.example/u/TOK>" {
		t.Errorf("without mailto %q", lu)
	}
	form, _ := url.ParseQuery(unsubscribe.PostBody)
	if !unsubscribe.IsOneClick(form) || unsubscribe.IsOneClick(url.Values{"List-Unsubscribe": {"yes"}}) {
		t.Error("IsOneClick")
	}
}

func TestNewSignerNeedsAKey(t *testing.T) {
	for _, keys := range [][][]byte{nil, {[]byte("short")}} {
		if _, err := unsubscribe.NewSigner(keys...); !errors.Is(err, unsubscribe.ErrNoKey) {
			t.Errorf("%q: %v", keys, err)
		}
	}
}

func FuzzVerify(f *testing.F) {
	s, _ := unsubscribe.NewSigner(key1)
	f.Add(s.Token(sub))
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		got, err := s.Verify(tok)
		if err != nil {
			return
		}
		// Whatever verifies must be exactly what a token of it is.
		if again, err := s.Verify(s.Token(got)); err != nil || again != got {
			t.Fatalf("%+v does not round-trip: %+v %v", got, again, err)
		}
	})
}
