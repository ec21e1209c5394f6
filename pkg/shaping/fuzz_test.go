package shaping_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/mailwave/mailwave/pkg/shaping"
)

// FuzzParse: any input either parses into a policy whose limits are usable
// or is refused with ErrInvalid; nothing panics.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(shaping.DefaultYAML())
	f.Add([]byte("providers: {google: {messages_per_hour: 1e9}}\n"))
	f.Add([]byte("source_ips: {'::1': {limits: {max_connections: 3}}}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := shaping.Parse(b)
		if err != nil {
			if !errors.Is(err, shaping.ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		for _, prov := range []string{"google", "default", "x"} {
			l := p.Limits(prov, "::1", "acme")
			if l.MaxConnections < 1 || l.MaxMessagesPerConnection < 1 || !(l.MessagesPerSecond > 0) || !(l.ConnectionsPerMinute > 0) {
				t.Fatalf("Limits(%s) = %+v", prov, l)
			}
			for _, w := range append(l.MessageWindows(), l.ConnectionWindows()...) {
				if !(w.Limit > 0) || w.Burst < 1 {
					t.Fatalf("window %v of %+v", w, l)
				}
			}
		}
		if d := p.RetryAfter("speeding", 3); d <= 0 {
			t.Fatalf("RetryAfter = %s", d)
		}
	})
}
