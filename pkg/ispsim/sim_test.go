package ispsim_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mailwave/mailwave/pkg/ispsim"
)

func TestDefaultProfile(t *testing.T) {
	p, err := ispsim.DefaultProfile()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"google":    {"gmail.com", "googlemail.com", "brightworks.example"},
		"yahoo":     {"yahoo.com", "aol.com"},
		"microsoft": {"outlook.com", "hotmail.com"},
		"corporate": {"globex.example"},
		"longtail":  {"smallshop.example", "tail20.example"},
	}
	for name, domains := range want {
		pc := provider(p, name)
		for _, d := range domains {
			found := false
			for _, dc := range pc.Domains {
				found = found || dc.Name == d
			}
			if !found {
				t.Errorf("%s lacks %s", name, d)
			}
		}
	}
}

func TestParseProfileStrict(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown top field", "hostnme: x\n", "hostnme"},
		{"unknown provider field", "providers:\n  - name: a\n    domainz: []\n", "domainz"},
		{"bad reply", "providers:\n  - name: a\n    domains: [{name: a.example, mx: ['10 mx.a.example']}]\n    replies: {rate: 'slow down'}\n", "replies.rate"},
		{"bad action", "providers:\n  - name: a\n    domains: [{name: a.example, mx: ['10 mx.a.example']}]\n    rules: [{match: 'x*', action: explode}]\n", "explode"},
		{"bad record", "dns:\n  records: ['example.com. MX x']\n", "dns.records"},
		{"unknown dnsbl", "providers:\n  - name: a\n    domains: [{name: a.example, mx: ['10 mx.a.example']}]\n    dnsbl: [nolist.example]\n", "nolist.example"},
		{"address not loopback", "providers:\n  - name: a\n    address: 10.0.0.1\n    domains: [{name: a.example, mx: ['10 mx.a.example']}]\n", "10.0.0.1"},
		{"domain twice", "providers:\n  - name: a\n    domains: [{name: a.example, mx: ['10 mx.a.example']}]\n  - name: b\n    domains: [{name: a.example, mx: ['10 mx.a.example']}]\n", "a.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ispsim.ParseProfile([]byte(tt.yaml))
			if !errors.Is(err, ispsim.ErrInvalidProfile) {
				t.Fatalf("err = %v, want ErrInvalidProfile", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to name %q", err, tt.want)
			}
		})
	}
}

func TestAcceptedMessageInLedger(t *testing.T) {
	sim, _ := start(t, nil)
	for _, to := range []string{"alice@gmail.com", "bob@brightworks.example", "carol@aol.com", "dan@hotmail.com", "erin@globex.example", "fay@tail7.example"} {
		if strings.HasSuffix(to, "globex.example") {
			// The corporate domain greylists everyone: allow this sender.
			if err := sim.Provider("corporate").AddRule(ispsim.RecipientRule{Match: "erin", Action: ispsim.ActionAccept}); err != nil {
				t.Fatal(err)
			}
		}
		id := "m-" + to
		if err := send(t, sim, "127.0.0.2", "news@mailwave.test", to, msg("news@mailwave.test", to, id, "hi")); err != nil {
			t.Fatalf("send to %s: %v", to, err)
		}
		snap, err := sim.Ledger().Wait(ctxT(t), func(s *ispsim.Snapshot) bool { return s.Delivered(id, to) == 1 })
		if err != nil {
			t.Fatal(err)
		}
		m := snap.MessagesWithID(id)[0]
		if m.SourceIP != ip2 || m.EHLO != "mta1.mailwave.test" || m.MailFrom != "news@mailwave.test" || m.TLS {
			t.Errorf("message %+v", m)
		}
		if want := sim.ProviderFor(to[strings.IndexByte(to, '@')+1:]).Name(); m.Provider != want {
			t.Errorf("provider %s, want %s", m.Provider, want)
		}
		if m.Header.Get("Subject") != "hello" || !strings.Contains(string(m.Data), "hi") {
			t.Errorf("data %q", m.Data)
		}
		if m.Auth.SPF != "pass" {
			t.Errorf("spf %s for %s", m.Auth.SPF, to)
		}
	}
	snap := sim.Ledger().Snapshot()
	if c := snap.Counter("google", ip2); c.Accepted != 2 || c.Connections != 2 {
		t.Errorf("google counter %+v", c)
	}
}

func TestDuplicatesCounted(t *testing.T) {
	sim, _ := start(t, nil)
	data := msg("news@mailwave.test", "alice@gmail.com", "dup-1", "x")
	for range 3 {
		if err := send(t, sim, "127.0.0.2", "news@mailwave.test", "alice@gmail.com", data); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := sim.Ledger().Wait(ctxT(t), func(s *ispsim.Snapshot) bool { return len(s.Messages) == 3 })
	if err != nil {
		t.Fatal(err)
	}
	if n := snap.Delivered("dup-1", "alice@gmail.com"); n != 3 {
		t.Errorf("delivered %d", n)
	}
	if d := snap.Duplicates()["dup-1"]; d != 3 {
		t.Errorf("duplicates %v", snap.Duplicates())
	}
}

func TestRelayDenied(t *testing.T) {
	sim, _ := start(t, nil)
	c, err := client(t, sim, "127.0.0.2", "alice@gmail.com")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("news@mailwave.test", nil); err != nil {
		t.Fatal(err)
	}
	err = c.Rcpt("someone@yahoo.com", nil)
	if code(err) != 550 {
		t.Fatalf("rcpt to another provider's domain: %v", err)
	}
}
