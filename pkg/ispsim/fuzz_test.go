package ispsim_test

import (
	"errors"
	"testing"

	"github.com/mailwave/mailwave/pkg/ispsim"
)

// FuzzParseProfile checks that any input either parses into a profile
// that parses again the same way, or fails with ErrInvalidProfile.
func FuzzParseProfile(f *testing.F) {
	f.Add([]byte("hostname: a.example\nroutes: {\"*\": \"127.0.0.1:25\"}\n"))
	f.Add([]byte("providers:\n  - name: a\n    domains: [{name: a.example, mx: ['10 mx.a.example']}]\n    replies: {rate: \"421-4.7.0 a\\n4.7.0 b\"}\n"))
	f.Add([]byte("dns: {blocklists: [{zone: z.example, kind: ip, listings: {'::1': 127.0.0.2}}]}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ispsim.ParseProfile(b)
		if err != nil {
			if !errors.Is(err, ispsim.ErrInvalidProfile) {
				t.Fatalf("error %v does not wrap ErrInvalidProfile", err)
			}
			return
		}
		if _, err := ispsim.ParseProfile(mustYAML(t, p)); err != nil {
			t.Fatalf("a parsed profile does not parse again: %v", err)
		}
	})
}
