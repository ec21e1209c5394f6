package ispsim_test

import (
	"testing"

	"github.com/miekg/dns"

	"github.com/mailwave/mailwave/pkg/ispsim"
)

func query(t *testing.T, sim *ispsim.Sim, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	r, _, err := c.Exchange(m, sim.DNSAddr())
	if err != nil {
		t.Fatalf("%s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
	}
	return r
}

func answers(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch v := rr.(type) {
		case *dns.MX:
			out = append(out, v.Mx)
		case *dns.A:
			out = append(out, v.A.String())
		case *dns.TXT:
			s := ""
			for _, part := range v.Txt {
				s += part
			}
			out = append(out, s)
		case *dns.PTR:
			out = append(out, v.Ptr)
		case *dns.CNAME:
			out = append(out, v.Target)
		}
	}
	return out
}

func TestDNSRecords(t *testing.T) {
	sim, _ := start(t, nil)
	z := sim.DNS()
	z.SetTXT("news.brand.example", "v=spf1 ip4:127.0.0.2 -all")
	z.SetPTR(mustAddr("127.0.0.9"), "mta9.brand.example")
	z.SetCNAME("alias.brand.example", "gmail-smtp-in.l.google.com")
	if err := z.AddRR("sel._domainkey.brand.example. TXT \"v=DKIM1; p=\""); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{"gmail.com", dns.TypeMX, dns.RcodeSuccess, []string{"gmail-smtp-in.l.google.com.", "alt1.gmail-smtp-in.l.google.com.", "alt2.gmail-smtp-in.l.google.com."}},
		{"brightworks.example", dns.TypeMX, dns.RcodeSuccess, []string{"aspmx.l.google.com.", "alt1.aspmx.l.google.com.", "alt2.aspmx.l.google.com."}},
		{"GMAIL-SMTP-IN.L.GOOGLE.COM", dns.TypeA, dns.RcodeSuccess, []string{"127.0.0.10"}},
		{"aspmx.l.google.com", dns.TypeA, dns.RcodeSuccess, []string{"127.0.0.10"}},
		{"mta5.am0.yahoodns.net", dns.TypeA, dns.RcodeSuccess, []string{"127.0.0.11"}},
		{"hotmail.com", dns.TypeMX, dns.RcodeSuccess, []string{"hotmail-com.olc.protection.outlook.com."}},
		{"fabrikam.example", dns.TypeMX, dns.RcodeSuccess, []string{"fabrikam-example.mail.protection.outlook.com."}},
		{"nullmx.example", dns.TypeMX, dns.RcodeSuccess, []string{"."}},
		{"gone.example", dns.TypeMX, dns.RcodeNameError, nil},
		{"broken-dns.example", dns.TypeTXT, dns.RcodeServerFailure, nil},
		{"no-such-name.example", dns.TypeA, dns.RcodeNameError, nil},
		{"gmail.com", dns.TypeAAAA, dns.RcodeSuccess, nil},               // NODATA
		{"_domainkey.brand.example", dns.TypeTXT, dns.RcodeSuccess, nil}, // empty non-terminal
		{"news.brand.example", dns.TypeTXT, dns.RcodeSuccess, []string{"v=spf1 ip4:127.0.0.2 -all"}},
		{"9.0.0.127.in-addr.arpa", dns.TypePTR, dns.RcodeSuccess, []string{"mta9.brand.example."}},
		{"alias.brand.example", dns.TypeA, dns.RcodeSuccess, []string{"gmail-smtp-in.l.google.com.", "127.0.0.10"}},
		{"66.0.0.127.zen.spamhaus.org", dns.TypeA, dns.RcodeSuccess, []string{"127.0.0.4"}},
		{"66.0.0.127.zen.spamhaus.org", dns.TypeTXT, dns.RcodeSuccess, []string{"Listed by ZEN, see https://check.spamhaus.org/query/ip/127.0.0.66"}},
		{"5.0.0.127.zen.spamhaus.org", dns.TypeA, dns.RcodeNameError, nil},
		{"dbltest.com.dbl.spamhaus.org", dns.TypeA, dns.RcodeSuccess, []string{"127.0.1.2"}},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tt := range tests {
			t.Run(network+" "+tt.name+" "+dns.TypeToString[tt.qtype], func(t *testing.T) {
				r := query(t, sim, network, tt.name, tt.qtype)
				if r.Rcode != tt.rcode {
					t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
				}
				if got := answers(r); !equal(got, tt.want) {
					t.Errorf("answers %q, want %q", got, tt.want)
				}
			})
		}
	}
}

func TestDNSRunTimeChanges(t *testing.T) {
	sim, _ := start(t, nil)
	z := sim.DNS()

	z.SetMX("brand.example", ispsim.MX{Pref: 10, Host: "in.brand.example"})
	if got := answers(query(t, sim, "udp", "brand.example", dns.TypeMX)); !equal(got, []string{"in.brand.example."}) {
		t.Errorf("set MX: %q", got)
	}
	z.SetNullMX("brand.example")
	if got := answers(query(t, sim, "udp", "brand.example", dns.TypeMX)); !equal(got, []string{"."}) {
		t.Errorf("null MX: %q", got)
	}
	z.SetNXDomain("brand.example")
	if r := query(t, sim, "udp", "brand.example", dns.TypeMX); r.Rcode != dns.RcodeNameError {
		t.Errorf("forced NXDOMAIN: %s", dns.RcodeToString[r.Rcode])
	}
	z.SetRcode("brand.example", dns.RcodeSuccess)
	z.Remove("brand.example", dns.TypeMX)
	if r := query(t, sim, "udp", "brand.example", dns.TypeMX); r.Rcode != dns.RcodeNameError {
		t.Errorf("removed: %s", dns.RcodeToString[r.Rcode])
	}

	// Blocklists: list, refuse, delist.
	const zone = "zen.spamhaus.org"
	if err := z.ListIP(zone, ip3, "127.0.0.3"); err != nil {
		t.Fatal(err)
	}
	if got := answers(query(t, sim, "udp", "3.0.0.127."+zone, dns.TypeA)); !equal(got, []string{"127.0.0.3"}) {
		t.Errorf("listed: %q", got)
	}
	if err := z.ListIP(zone, mustAddr("2001:db8::1"), ""); err != nil {
		t.Fatal(err)
	}
	v6 := "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2." + zone
	if got := answers(query(t, sim, "udp", v6, dns.TypeA)); !equal(got, []string{"127.0.0.2"}) {
		t.Errorf("IPv6 listing: %q", got)
	}
	if err := z.SetRefused(zone, "127.255.255.254"); err != nil {
		t.Fatal(err)
	}
	if got := answers(query(t, sim, "udp", "99.0.0.127."+zone, dns.TypeA)); !equal(got, []string{"127.255.255.254"}) {
		t.Errorf("refused: %q", got)
	}
	if err := z.SetRefused(zone, ""); err != nil {
		t.Fatal(err)
	}
	if err := z.Delist(zone, "127.0.0.3"); err != nil {
		t.Fatal(err)
	}
	if r := query(t, sim, "udp", "3.0.0.127."+zone, dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("delisted: %s", dns.RcodeToString[r.Rcode])
	}
	if err := z.ListDomain("dbl.spamhaus.org", "spammy.example", ""); err != nil {
		t.Fatal(err)
	}
	if got := answers(query(t, sim, "tcp", "spammy.example.dbl.spamhaus.org", dns.TypeA)); !equal(got, []string{"127.0.1.2"}) {
		t.Errorf("domain listing: %q", got)
	}
	if err := z.ListIP("nolist.example", ip2, ""); err == nil {
		t.Error("listing in an unknown zone")
	}
	if err := z.ListIP("dbl.spamhaus.org", ip2, ""); err == nil {
		t.Error("IP listed in a domain zone")
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
