package spf_test

import (
	"errors"
	"testing"

	"github.com/mailwave/mailwave/pkg/spf"
)

func TestParseValid(t *testing.T) {
	tests := []struct {
		in, canonical string
	}{
		{"v=spf1", "v=spf1"},
		{"V=SPF1 -ALL", "v=spf1 -all"},
		{"v=spf1  ip4:192.0.2.0/24   ~all ", "v=spf1 ip4:192.0.2.0/24 ~all"},
		{"v=spf1 ip4:192.0.2.7 ip6:2001:db8::/32 -all", "v=spf1 ip4:192.0.2.7 ip6:2001:db8::/32 -all"},
		{"v=spf1 a mx/24 a:mail.example.com//64 mx:example.net/24//48 -all", "v=spf1 a mx/24 a:mail.example.com//64 mx:example.net/24//48 -all"},
		{"v=spf1 include:_spf.example.com ?all", "v=spf1 include:_spf.example.com ?all"},
		{"v=spf1 exists:%{ir}.%{l1r-}.user.%{d2} -all", "v=spf1 exists:%{ir}.%{l1r-}.user.%{d2} -all"},
		{"v=spf1 a:foo:bar/baz.example.com", "v=spf1 a:foo:bar/baz.example.com"},
		{"v=spf1 ptr ptr:example.com -all", "v=spf1 ptr ptr:example.com -all"},
		{"v=spf1 redirect=_spf.example.com", "v=spf1 redirect=_spf.example.com"},
		{"v=spf1 -all exp=explain.%{d}", "v=spf1 -all exp=explain.%{d}"},
		{"v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all", "v=spf1 ip4:1.2.3.4 -all moo.cow-far_out=man:dog/cat"},
		{"v=spf1 a:foo.example.xn--zckzah -all", "v=spf1 a:foo.example.xn--zckzah -all"},
		{"v=spf1 a:macro%%percent%_%_space%-url-space.example.com", "v=spf1 a:macro%%percent%_%_space%-url-space.example.com"},
		{"v=spf1 ip4:1.2.3.4/32 ip4:10.1.2.3/8", "v=spf1 ip4:1.2.3.4 ip4:10.0.0.0/8"},
	}
	for _, tt := range tests {
		rec, err := spf.Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got := rec.String(); got != tt.canonical {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.in, got, tt.canonical)
		}
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		in   string
		want error
	}{
		{"v=spf10", spf.ErrNotSPF},
		{"v=spf1-all", spf.ErrNotSPF},
		{"spf1 -all", spf.ErrNotSPF},
		{"v=spf1 ip4:1.2.3.4 -all moo", spf.ErrSyntax}, // error after a match (RFC 7208 §4.6)
		{"v=spf1 -all.", spf.ErrSyntax},                // all takes no argument
		{"v=spf1 -all/8", spf.ErrSyntax},               // nor a prefix
		{"v=spf1 ptr/0 -all", spf.ErrSyntax},           // ptr has no cidr
		{"v=spf1 a:museum", spf.ErrSyntax},             // no dot before the top label
		{"v=spf1 a:museum.", spf.ErrSyntax},            // a trailing dot does not help
		{"v=spf1 a:111.222.33.44", spf.ErrSyntax},      // numeric top label
		{"v=spf1 a:example.com:8080", spf.ErrSyntax},   // ':' in the top label
		{"v=spf1 a:example.-com", spf.ErrSyntax},       // top label starts with '-'
		{"v=spf1 a:", spf.ErrSyntax},                   // empty domain
		{"v=spf1 a/33", spf.ErrSyntax},                 // ip4 cidr over 32
		{"v=spf1 a//129", spf.ErrSyntax},               // ip6 cidr over 128
		{"v=spf1 a/24/64", spf.ErrSyntax},              // dual cidr needs "//"
		{"v=spf1 ip4:1.2.3.4/032", spf.ErrSyntax},      // leading zero
		{"v=spf1 ip4:1.2.3", spf.ErrSyntax},            // short address
		{"v=spf1 ip4:1.2.3.4:8080", spf.ErrSyntax},     // port
		{"v=spf1 ip4:1.2.3.4//32", spf.ErrSyntax},      // dual cidr on ip4
		{"v=spf1 ip4", spf.ErrSyntax},                  // no address
		{"v=spf1 ip4:2001:db8::1", spf.ErrSyntax},      // wrong family
		{"v=spf1 ip6::CAFE::BABE", spf.ErrSyntax},      // bad address
		{"v=spf1 ip6:::1/129", spf.ErrSyntax},          // cidr over 128
		{"v=spf1 include", spf.ErrSyntax},              // include needs a domain
		{"v=spf1 include:ip5.example.com/24", spf.ErrSyntax},
		{"v=spf1 exists:mail.example.com/24", spf.ErrSyntax},
		{"v=spf1 redirect:example.com", spf.ErrSyntax}, // redirect is a modifier
		{"v=spf1 redirect=a.example.com redirect=b.example.com", spf.ErrSyntax},
		{"v=spf1 exp=a.example.com exp=b.example.com", spf.ErrSyntax},
		{"v=spf1 redirect=", spf.ErrSyntax},
		{"v=spf1 exp=-all", spf.ErrSyntax},
		{"v=spf1 =all", spf.ErrSyntax},    // empty modifier name
		{"v=spf1 1up=foo", spf.ErrSyntax}, // name must start with a letter
		{"v=spf1 moo.cow/far_out=man:dog/cat", spf.ErrSyntax},
		{"v=spf1 -all foo=%abc", spf.ErrSyntax}, // unknown modifier with bad macro
		{"v=spf1 exists:%(ir).sbl.example.com", spf.ErrSyntax},
		{"v=spf1 exists:foo%.sbl.example.com", spf.ErrSyntax},
		{"v=spf1 -all exp=%{r}.example.com", spf.ErrSyntax}, // r only in explanation text
		{"v=spf1 a:%{a}.example.com", spf.ErrSyntax},        // unknown letter
		{"v=spf1 a:%{d0}.example.com", spf.ErrSyntax},       // zero digits
		{"v=spf1 a:%{d.example.com", spf.ErrSyntax},         // unterminated
		{"v=spf1 a:\xef\xbb\xbfgarbage.example.net -all", spf.ErrSyntax},
		{"v=spf1 a:foo.example.com\x00", spf.ErrSyntax},
		{"v=spf1 \tall", spf.ErrSyntax},
		{"v=spf1 foo:bar", spf.ErrSyntax}, // unknown mechanism
	}
	for _, tt := range tests {
		_, err := spf.Parse(tt.in)
		if !errors.Is(err, tt.want) {
			t.Errorf("Parse(%q) = %v, want %v", tt.in, err, tt.want)
		}
	}
}

func TestIsSPF(t *testing.T) {
	for in, want := range map[string]bool{
		"v=spf1":        true,
		"v=spf1 -all":   true,
		"V=SpF1 ~all":   true,
		"v=spf10":       false,
		"v=spf1mx":      false,
		"":              false,
		"google-site=1": false,
	} {
		if got := spf.IsSPF(in); got != want {
			t.Errorf("IsSPF(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestDirectiveLookups(t *testing.T) {
	rec, err := spf.Parse("v=spf1 ip4:192.0.2.1 a mx ptr include:x.example.com exists:%{i}.example.com ip6:::1 -all")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range rec.Directives {
		if d.NeedsLookup() {
			n++
		}
	}
	if n != 5 {
		t.Errorf("lookup mechanisms = %d, want 5", n)
	}
	if got := rec.Directives[len(rec.Directives)-1].Result(); got != spf.Fail {
		t.Errorf("-all result = %s, want fail", got)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"v=spf1 -all",
		"v=spf1 a mx/24//64 ip4:192.0.2.0/24 ip6:2001:db8::/32 include:_spf.example.com ~all",
		"v=spf1 exists:%{ir}.%{l1r-}.user.%{d2} redirect=%{d}.d.example.com exp=exp.%{d}",
		"v=spf1 a:foo:bar/baz.example.com ptr:example.org ?all moo=%{s}",
		"v=spf1 a:%{H}.bar -all",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rec, err := spf.Parse(s)
		if err != nil {
			if !errors.Is(err, spf.ErrSyntax) && !errors.Is(err, spf.ErrNotSPF) {
				t.Fatalf("Parse(%q) error %v wraps no sentinel", s, err)
			}
			return
		}
		// What we print must parse again to the same record.
		out := rec.String()
		again, err := spf.Parse(out)
		if err != nil {
			t.Fatalf("Parse(%q) ok, but its String %q does not parse: %v", s, out, err)
		}
		if again.String() != out {
			t.Fatalf("String not stable: %q then %q", out, again.String())
		}
	})
}
