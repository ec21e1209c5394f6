package authaudit_test

import (
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"

	"github.com/mailwave/mailwave/pkg/authaudit"
)

func FuzzParseKeyRecord(f *testing.F) {
	for _, s := range []string{
		"v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP/UC3SBsEmGqZ9ZJW3/DkMoGeLnQg1fWn7/zYtIxN2SnFCjxOCKG9v3b4jYfcTNh5ijSsq631uBItLa7od+v/RtdC2UzJ1lWT947qR+Rcac2gbto/NMqJ0fzfVjH4OuKhitdY9tf6mcwGjaNBcWToIMmPSPDdQPNUYckcQ2QIDAQAB",
		"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
		"v=DKIM1; p=",
		"k=rsa; t=y; p=AAAA",
		"v=DKIM2; p=AAAA",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pub, err := authaudit.ParseKeyRecord(s)
		if err != nil {
			if !errors.Is(err, authaudit.ErrKey) {
				t.Fatalf("error %v wraps no ErrKey", err)
			}
			return
		}
		switch pub.(type) {
		case *rsa.PublicKey, ed25519.PublicKey:
		default:
			t.Fatalf("ParseKeyRecord(%q) returned a %T", s, pub)
		}
	})
}

func TestParseKeyRecord(t *testing.T) {
	good := map[string]string{
		"rsa":     "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP/UC3SBsEmGqZ9ZJW3/DkMoGeLnQg1fWn7/zYtIxN2SnFCjxOCKG9v3b4jYfcTNh5ijSsq631uBItLa7od+v/RtdC2UzJ1lWT947qR+Rcac2gbto/NMqJ0fzfVjH4OuKhitdY9tf6mcwGjaNBcWToIMmPSPDdQPNUYckcQ2QIDAQAB",
		"ed25519": "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
	}
	for name, rec := range good {
		if _, err := authaudit.ParseKeyRecord(rec); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, bad := range []string{
		"v=DKIM1; p=",                                  // revoked
		"v=DKIM2; p=AAAA",                              // version
		"v=DKIM1; k=dsa; p=AAAA",                       // key type
		"v=DKIM1; k=ed25519; p=AAAA",                   // size
		"v=DKIM1; k=rsa; p=!!!",                        // base64
		"v=DKIM1; k=rsa",                               // no key
		"v=DKIM1; p=AAAA; p=AAAA",                      // duplicate tag
		"v=DKIM1; k=rsa; p=" + strings.Repeat("A", 40), // not a key
	} {
		if _, err := authaudit.ParseKeyRecord(bad); !errors.Is(err, authaudit.ErrKey) {
			t.Errorf("ParseKeyRecord(%q) = %v, want ErrKey", bad, err)
		}
	}
}

func FuzzDMARCTagList(f *testing.F) {
	f.Add("v=DMARC1; p=none; rua=mailto:a@example.com")
	f.Add("v=DMARC1;p=reject;;aspf=s")
	f.Add("garbage")
	f.Fuzz(func(t *testing.T, s string) {
		once := authaudit.TagListRoundTrip(s)
		if again := authaudit.TagListRoundTrip(once); again != once {
			t.Fatalf("not stable: %q -> %q -> %q", s, once, again)
		}
	})
}
