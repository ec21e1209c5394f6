package reputation_test

import (
	"errors"
	"testing"

	"github.com/mailwave/mailwave/services/reputation-monitor/reputation"
)

func zone(t *testing.T, name string) reputation.Blocklist {
	t.Helper()
	for _, bl := range defaultPolicy(t).Blocklists {
		if bl.Zone == name {
			return bl
		}
	}
	t.Fatalf("no zone %s", name)
	return reputation.Blocklist{}
}

func TestInterpret(t *testing.T) {
	zen, dbl := zone(t, "zen.spamhaus.org"), zone(t, "dbl.spamhaus.org")
	for _, tc := range []struct {
		name    string
		bl      reputation.Blocklist
		codes   []string
		listed  bool
		refused bool
	}{
		{"not listed", zen, nil, false, false},
		{"SBL", zen, []string{"127.0.0.2"}, true, false},
		{"XBL and PBL", zen, []string{"127.0.0.4", "127.0.0.10"}, true, false},
		{"PBL Spamhaus", zen, []string{"127.0.0.11"}, true, false},
		{"refused via public resolver", zen, []string{"127.255.255.254"}, false, true},
		{"over quota", zen, []string{"127.255.255.255"}, false, true},
		{"typo", zen, []string{"127.255.255.252"}, false, true},
		{"unknown code", zen, []string{"127.0.0.8"}, false, false},
		{"wildcard outside 127/8", zen, []string{"192.0.2.1"}, false, false},
		{"DBL spam domain", dbl, []string{"127.0.1.2"}, true, false},
		{"DBL invalid query", dbl, []string{"127.0.1.255"}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := reputation.Interpret(tc.bl, tc.codes)
			if l.Listed != tc.listed || errors.Is(err, reputation.ErrRefused) != tc.refused {
				t.Errorf("listed %v err %v; want listed %v refused %v", l.Listed, err, tc.listed, tc.refused)
			}
			if l.Listed && l.Meaning == "" {
				t.Error("listing without meaning")
			}
		})
	}
}

func TestQueryName(t *testing.T) {
	zen, dbl := zone(t, "zen.spamhaus.org"), zone(t, "dbl.spamhaus.org")
	for _, tc := range []struct {
		bl           reputation.Blocklist
		target, want string
	}{
		{zen, "127.0.0.3", "3.0.0.127.zen.spamhaus.org."},
		{zen, "2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.spamhaus.org."},
		{dbl, "mailwave.test", "mailwave.test.dbl.spamhaus.org."},
	} {
		got, err := reputation.QueryName(tc.bl, tc.target)
		if err != nil || got != tc.want {
			t.Errorf("%s: %q %v, want %q", tc.target, got, err, tc.want)
		}
	}
	if _, err := reputation.QueryName(zen, "not-an-ip"); !errors.Is(err, reputation.ErrLookup) {
		t.Errorf("bad IP: %v", err)
	}
}

func FuzzInterpret(f *testing.F) {
	f.Add("127.0.0.2", "127.255.255.254")
	f.Add("", "10.0.0.1")
	f.Fuzz(func(t *testing.T, a, b string) {
		bl := reputation.Blocklist{Zone: "zen.spamhaus.org", Kind: "ip", Codes: map[string]string{"127.0.0.2": "SBL"}}
		l, err := reputation.Interpret(bl, []string{a, b})
		if l.Listed && (err != nil || (a != "127.0.0.2" && b != "127.0.0.2")) {
			t.Fatalf("listed on %q %q: %v", a, b, err)
		}
	})
}
