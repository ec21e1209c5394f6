package verp_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mailwave/mailwave/pkg/verp"
)

const msgID = "0123456789abcdef0123456789abcdef"

func TestRoundTrip(t *testing.T) {
	s, err := verp.NewSigner([]byte("k1"))
	if err != nil {
		t.Fatal(err)
	}
	addr, err := s.Address(msgID, "Ana@Example.com", "Bounce.Shop.Example")
	if err != nil {
		t.Fatal(err)
	}
	local := addr[:strings.IndexByte(addr, '@')]
	if len(local) > 64 {
		t.Fatalf("local part %d octets, RFC 5321 allows 64", len(local))
	}
	if !strings.HasSuffix(addr, "@bounce.shop.example") {
		t.Fatalf("address %q not on the bounce domain", addr)
	}
	tok, err := s.Verify(strings.ToUpper(addr), "ana@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if tok.MessageID != msgID || tok.BounceDomain != "bounce.shop.example" {
		t.Fatalf("token %+v", tok)
	}
	if _, err := s.Verify(addr, "other@example.com"); !errors.Is(err, verp.ErrRecipientMismatch) {
		t.Fatalf("other recipient: %v", err)
	}
}

func TestForgeries(t *testing.T) {
	s, _ := verp.NewSigner([]byte("k1"))
	other, _ := verp.NewSigner([]byte("attacker"))
	good, _ := s.Address(msgID, "ana@example.com", "bounce.example")
	forged, _ := other.Address(msgID, "ana@example.com", "bounce.example")
	moved := strings.Replace(good, "@bounce.example", "@bounce.other.example", 1)
	flipped := []byte(good)
	if flipped[10] == 'a' {
		flipped[10] = 'b'
	} else {
		flipped[10] = 'a'
	}
	cases := []struct {
		name, addr string
		want       error
	}{
		{"other key", forged, verp.ErrBadSignature},
		{"moved domain", moved, verp.ErrBadSignature},
		{"flipped char", string(flipped), verp.ErrBadSignature},
		{"plain address", "postmaster@bounce.example", verp.ErrNotVERP},
		{"no at", "bxyz", verp.ErrNotVERP},
		{"truncated", good[:20] + "@bounce.example", verp.ErrNotVERP},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := s.Parse(c.addr); !errors.Is(err, c.want) {
				t.Fatalf("Parse(%q) = %v, want %v", c.addr, err, c.want)
			}
		})
	}
}

func TestKeyRotation(t *testing.T) {
	old, _ := verp.NewSigner([]byte("old"))
	addr, _ := old.Address(msgID, "ana@example.com", "b.example")
	rotated, _ := verp.NewSigner([]byte("new"), []byte("old"))
	if _, err := rotated.Verify(addr, "ana@example.com"); err != nil {
		t.Fatalf("old token after rotation: %v", err)
	}
	if _, err := verp.NewSigner(); !errors.Is(err, verp.ErrNoKey) {
		t.Fatalf("no key: %v", err)
	}
	if _, err := rotated.Address("not-hex", "a@b", "b.example"); !errors.Is(err, verp.ErrMessageID) {
		t.Fatalf("bad id: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	s, _ := verp.NewSigner([]byte("k"))
	good, _ := s.Address(msgID, "ana@example.com", "bounce.example")
	f.Add(good)
	f.Add("postmaster@example.com")
	f.Add("b@")
	f.Fuzz(func(t *testing.T, addr string) {
		tok, err := s.Parse(addr)
		if err == nil && len(tok.MessageID) != 32 {
			t.Fatalf("accepted %q with id %q", addr, tok.MessageID)
		}
	})
}

func TestParseKeys(t *testing.T) {
	tests := []struct {
		keys []string
		want error
	}{
		{nil, verp.ErrNoKey},
		{[]string{"0123456789abcdef", "short"}, verp.ErrShortKey},
		{[]string{"0123456789abcdef", "fedcba9876543210-old"}, nil},
	}
	for _, tt := range tests {
		s, err := verp.ParseKeys(tt.keys)
		if !errors.Is(err, tt.want) || (err == nil) != (s != nil) {
			t.Errorf("ParseKeys(%q) = %v, %v; want %v", tt.keys, s, err, tt.want)
		}
	}
	// The first key signs; the second verifies what it signed.
	old, _ := verp.ParseKeys([]string{"fedcba9876543210-old"})
	both, _ := verp.ParseKeys([]string{"0123456789abcdef", "fedcba9876543210-old"})
	addr, err := old.Address("0123456789abcdef0123456789abcdef", "ana@example.com", "bounces.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := both.Parse(addr); err != nil {
		t.Errorf("a rotated-out key no longer verifies: %v", err)
	}
}
