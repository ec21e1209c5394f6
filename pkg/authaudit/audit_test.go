package authaudit_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mailwave/mailwave/pkg/authaudit"
	"github.com/mailwave/mailwave/pkg/spf"
	"github.com/mailwave/mailwave/pkg/spf/dnstest"
)

var auditNow = time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)

func loadKey(t *testing.T, name string) crypto.Signer {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	k, err := authaudit.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// keyText is the DKIM key record of a private key's public half.
func keyText(t *testing.T, k crypto.Signer) string {
	t.Helper()
	switch pub := k.Public().(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	}
	t.Fatalf("key type %T", k.Public())
	return ""
}

// fixTXT renders a TXT record the way a fix does.
func fixTXT(name, text string) string {
	var parts []string
	for len(text) > 255 {
		parts = append(parts, `"`+text[:255]+`"`)
		text = text[255:]
	}
	parts = append(parts, `"`+text+`"`)
	return name + ". TXT " + strings.Join(parts, " ")
}

var (
	ip1 = netip.MustParseAddr("192.0.2.10")
	ip2 = netip.MustParseAddr("192.0.2.11")
	ip6 = netip.MustParseAddr("2001:db8::25")
)

const goodSPF = "v=spf1 include:_spf.pool.example.com -all"

// world publishes a correctly set up sender: From example.com, return path
// bounce.example.com, pool 192.0.2.10, 192.0.2.11 and 2001:db8::25 greeting
// as mta.example.com, DKIM selector mw.
func world(t *testing.T, key crypto.Signer) *dnstest.Zone {
	z := dnstest.NewZone()
	z.TXT("bounce.example.com", goodSPF)
	z.TXT("_spf.pool.example.com", "v=spf1 ip4:192.0.2.8/29 ip6:2001:db8::/64 -all")
	z.MX("bounce.example.com", 10, "in.example.com")
	z.Addr("in.example.com", netip.MustParseAddr("198.51.100.25"))
	z.TXT("mw._domainkey.example.com", keyText(t, key))
	z.TXT("_dmarc.example.com", "v=DMARC1; p=reject; rua=mailto:dmarc@example.com")
	for _, ip := range []netip.Addr{ip1, ip2, ip6} {
		z.ReversePTR(ip, "mta.example.com")
		z.Addr("mta.example.com", ip)
	}
	return z
}

func request(key crypto.Signer) authaudit.Request {
	return authaudit.Request{
		Domain:       "example.com",
		IPs:          []netip.Addr{ip1, ip2, ip6},
		Selector:     "mw",
		DKIMKey:      key,
		BounceDomain: "bounce.example.com",
		EHLO:         "mta.example.com",
	}
}

func audit(t *testing.T, z *dnstest.Zone, req authaudit.Request) authaudit.Report {
	t.Helper()
	srv, err := dnstest.Start(z)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	a := &authaudit.Auditor{Resolver: &spf.DNSClient{Server: srv.Addr(), Timeout: 2 * time.Second}}
	rep, err := a.Audit(context.Background(), req, auditNow)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func check(t *testing.T, rep authaudit.Report, name string) authaudit.Check {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("report has no %s check: %+v", name, rep)
	return authaudit.Check{}
}

func TestAuditCorrectDomainPasses(t *testing.T) {
	key := loadKey(t, "rsa2048.pem")
	rep := audit(t, world(t, key), request(key))
	if rep.Domain != "example.com" {
		t.Errorf("domain %q", rep.Domain)
	}
	var names []string
	for _, c := range rep.Checks {
		names = append(names, c.Name)
		if !c.OK || len(c.Problems) != 0 || c.Fix != "" {
			t.Errorf("%s: ok=%v problems=%q fix=%q", c.Name, c.OK, c.Problems, c.Fix)
		}
	}
	if got := strings.Join(names, ","); got != "spf,dkim,dmarc,ptr,mx" {
		t.Errorf("checks %s", got)
	}
	if !rep.OK() {
		t.Error("report not OK")
	}
}

func TestAuditFindsProblems(t *testing.T) {
	key := loadKey(t, "rsa2048.pem")
	other := loadKey(t, "rsa2048-other.pem")
	short := loadKey(t, "rsa1024.pem")
	tests := []struct {
		name    string
		change  func(z *dnstest.Zone)
		req     func(r *authaudit.Request)
		check   string
		problem string // a substring of one problem
		fix     string // the exact fix; "-" to skip comparing it
	}{
		{
			name: "missing include leaves the pool unauthorised",
			change: func(z *dnstest.Zone) {
				z.Delete("bounce.example.com", dns.TypeTXT)
				z.TXT("bounce.example.com", "v=spf1 ip4:198.51.100.7 -all")
			},
			check:   "spf",
			problem: "192.0.2.11 is in the pool but the SPF record of bounce.example.com does not authorise it: result fail (it matched -all)",
			fix:     fixTXT("bounce.example.com", "v=spf1 ip4:192.0.2.10 ip4:192.0.2.11 ip6:2001:db8::25 ip4:198.51.100.7 -all"),
		},
		{
			name:    "second SPF record",
			change:  func(z *dnstest.Zone) { z.TXT("bounce.example.com", "v=spf1 ip4:198.51.100.7 ~all") },
			check:   "spf",
			problem: "publishes 2 SPF records: every receiver returns permerror",
			fix:     fixTXT("bounce.example.com", "v=spf1 ip4:192.0.2.10 ip4:192.0.2.11 ip6:2001:db8::25 include:_spf.pool.example.com ip4:198.51.100.7 -all"),
		},
		{
			name: "more than ten lookups",
			change: func(z *dnstest.Zone) {
				z.Delete("bounce.example.com", dns.TypeTXT)
				z.TXT("bounce.example.com", "v=spf1 a mx include:_spf.pool.example.com include:big.example.net -all")
				z.TXT("big.example.net", "v=spf1 a:a1.example.net a:a2.example.net a:a3.example.net a:a4.example.net a:a5.example.net a:a6.example.net a:a7.example.net ~all")
			},
			check:   "spf",
			problem: "needs 11 DNS lookups when every term is evaluated, more than the 10",
			fix:     fixTXT("bounce.example.com", "v=spf1 a mx include:_spf.pool.example.com -all"),
		},
		{
			name: "syntax error is a permerror everywhere",
			change: func(z *dnstest.Zone) {
				z.Delete("bounce.example.com", dns.TypeTXT)
				z.TXT("bounce.example.com", "v=spf1 include:_spf.pool.example.com ip4:192.0.2.300 -all")
			},
			check:   "spf",
			problem: "every receiver returns permerror for all its mail (RFC 7208 §4.6)",
			fix:     fixTXT("bounce.example.com", "v=spf1 ip4:192.0.2.10 ip4:192.0.2.11 ip6:2001:db8::25 include:_spf.pool.example.com -all"),
		},
		{
			name:    "no SPF record",
			change:  func(z *dnstest.Zone) { z.Delete("bounce.example.com", dns.TypeTXT) },
			check:   "spf",
			problem: "publishes no SPF record",
			fix:     fixTXT("bounce.example.com", "v=spf1 ip4:192.0.2.10 ip4:192.0.2.11 ip6:2001:db8::25 -all"),
		},
		{
			name: "softfail all gets advice",
			change: func(z *dnstest.Zone) {
				z.Delete("bounce.example.com", dns.TypeTXT)
				z.TXT("bounce.example.com", "v=spf1 include:_spf.pool.example.com ~all")
			},
			check:   "spf",
			problem: "once every sending IP is listed, publish -all",
			fix:     fixTXT("bounce.example.com", goodSPF),
		},
		{
			name:    "missing DKIM key",
			change:  func(z *dnstest.Zone) { z.Delete("mw._domainkey.example.com", dns.TypeTXT) },
			check:   "dkim",
			problem: "no DKIM key is published at mw._domainkey.example.com",
			fix:     fixTXT("mw._domainkey.example.com", keyText(t, key)),
		},
		{
			name: "mismatched DKIM key",
			change: func(z *dnstest.Zone) {
				z.Delete("mw._domainkey.example.com", dns.TypeTXT)
				z.TXT("mw._domainkey.example.com", keyText(t, other))
			},
			check:   "dkim",
			problem: "does not match the private key",
			fix:     fixTXT("mw._domainkey.example.com", keyText(t, key)),
		},
		{
			name: "short DKIM key",
			change: func(z *dnstest.Zone) {
				z.Delete("mw._domainkey.example.com", dns.TypeTXT)
				z.TXT("mw._domainkey.example.com", keyText(t, short))
			},
			req:     func(r *authaudit.Request) { r.DKIMKey = nil },
			check:   "dkim",
			problem: "has 1024 bits: use 2048 bits",
			fix:     fixTXT("mw._domainkey.example.com", "v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo of a new 2048-bit RSA key>"),
		},
		{
			name:    "no selector",
			req:     func(r *authaudit.Request) { r.Selector = "" },
			check:   "dkim",
			problem: "no DKIM selector given",
			fix:     "",
		},
		{
			name:    "missing DMARC record",
			change:  func(z *dnstest.Zone) { z.Delete("_dmarc.example.com", dns.TypeTXT) },
			check:   "dmarc",
			problem: "no DMARC record at _dmarc.example.com",
			fix:     fixTXT("_dmarc.example.com", "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com"),
		},
		{
			name: "DMARC monitoring only",
			change: func(z *dnstest.Zone) {
				z.Delete("_dmarc.example.com", dns.TypeTXT)
				z.TXT("_dmarc.example.com", "v=DMARC1; p=none")
			},
			check:   "dmarc",
			problem: "p=none at _dmarc.example.com",
			fix:     fixTXT("_dmarc.example.com", "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com"),
		},
		{
			name: "strict SPF alignment with a bounce subdomain",
			change: func(z *dnstest.Zone) {
				z.Delete("_dmarc.example.com", dns.TypeTXT)
				z.TXT("_dmarc.example.com", "v=DMARC1; p=reject; aspf=s; rua=mailto:d@example.com")
			},
			check:   "dmarc",
			problem: "aspf=s: the return-path domain bounce.example.com is not identical",
			fix:     fixTXT("_dmarc.example.com", "v=DMARC1; p=reject; aspf=r; rua=mailto:d@example.com"),
		},
		{
			name:    "unaligned DKIM domain",
			req:     func(r *authaudit.Request) { r.DKIMDomain = "esp.example.net" },
			check:   "dmarc",
			problem: "the DKIM signing domain esp.example.net is not under the organizational domain of example.com",
			fix:     "",
		},
		{
			name: "PTR does not resolve back",
			change: func(z *dnstest.Zone) {
				arpa, _ := dns.ReverseAddr(ip2.String())
				z.Delete(arpa, dns.TypePTR)
				z.ReversePTR(ip2, "host-11.isp.example.net")
			},
			check:   "ptr",
			problem: "192.0.2.11: its PTR names (host-11.isp.example.net) do not resolve back to it",
			fix:     "11.2.0.192.in-addr.arpa. PTR mta.example.com.",
		},
		{
			name: "reverse name is not the EHLO name",
			change: func(z *dnstest.Zone) {
				arpa, _ := dns.ReverseAddr(ip1.String())
				z.Delete(arpa, dns.TypePTR)
				z.ReversePTR(ip1, "other.example.com")
				z.Addr("other.example.com", ip1)
			},
			check:   "ptr",
			problem: "192.0.2.10: its reverse name is other.example.com but it greets as mta.example.com",
			fix:     "10.2.0.192.in-addr.arpa. PTR mta.example.com.",
		},
		{
			name: "an IP with its own EHLO name is checked against it",
			req: func(r *authaudit.Request) {
				r.EHLONames = map[netip.Addr]string{ip2: "mta-11.example.com"}
			},
			check:   "ptr",
			problem: "192.0.2.11: its reverse name is mta.example.com but it greets as mta-11.example.com",
			fix:     "11.2.0.192.in-addr.arpa. PTR mta-11.example.com.\nmta-11.example.com. A 192.0.2.11",
		},
		{
			name:    "no PTR and the EHLO name does not resolve",
			req:     func(r *authaudit.Request) { r.IPs = append(r.IPs, netip.MustParseAddr("192.0.2.12")) },
			check:   "ptr",
			problem: "192.0.2.12 has no PTR record",
			fix:     "12.2.0.192.in-addr.arpa. PTR mta.example.com.\nmta.example.com. A 192.0.2.12",
		},
		{
			name:    "no MX on the bounce domain",
			change:  func(z *dnstest.Zone) { z.Delete("bounce.example.com", dns.TypeMX) },
			check:   "mx",
			problem: "has no MX record and no address",
			fix:     "bounce.example.com. MX 10 <host that runs inbound-dsn for bounce.example.com>.",
		},
		{
			name: "null MX on the bounce domain",
			change: func(z *dnstest.Zone) {
				z.Delete("bounce.example.com", dns.TypeMX)
				z.MX("bounce.example.com", 0, ".")
			},
			check:   "mx",
			problem: "null MX (RFC 7505)",
			fix:     "-",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z := world(t, key)
			if tt.change != nil {
				tt.change(z)
			}
			req := request(key)
			if tt.req != nil {
				tt.req(&req)
			}
			rep := audit(t, z, req)
			c := check(t, rep, tt.check)
			if c.OK {
				t.Fatalf("%s check passed: %+v", tt.check, c)
			}
			found := false
			for _, p := range c.Problems {
				found = found || strings.Contains(p, tt.problem)
			}
			if !found {
				t.Errorf("no problem contains %q:\n%s", tt.problem, strings.Join(c.Problems, "\n"))
			}
			if tt.fix != "-" && c.Fix != tt.fix {
				t.Errorf("fix\n%s\nwant\n%s", c.Fix, tt.fix)
			}
			if rep.OK() {
				t.Error("report OK despite a failed check")
			}
		})
	}
}

func TestAuditAcceptsEd25519(t *testing.T) {
	rsaKey := loadKey(t, "rsa2048.pem")
	edKey := loadKey(t, "ed25519.pem")
	z := world(t, rsaKey)
	z.TXT("ed._domainkey.example.com", keyText(t, edKey))
	req := request(edKey)
	req.Selector = "ed"
	c := check(t, audit(t, z, req), "dkim")
	if !c.OK {
		t.Errorf("Ed25519 key: %q", c.Problems)
	}
}

func TestAuditReportsDNSFailure(t *testing.T) {
	key := loadKey(t, "rsa2048.pem")
	z := world(t, key)
	z.Timeout("_dmarc.example.com")
	srv, err := dnstest.Start(z)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	a := &authaudit.Auditor{Resolver: &spf.DNSClient{Server: srv.Addr(), Timeout: 150 * time.Millisecond}}
	rep, err := a.Audit(context.Background(), request(key), auditNow)
	if err != nil {
		t.Fatal(err)
	}
	c := check(t, rep, "dmarc")
	if c.OK || len(c.Problems) != 1 || !strings.Contains(c.Problems[0], "cannot look up _dmarc.example.com") || c.Fix != "" {
		t.Errorf("dmarc check on a timeout: %+v", c)
	}
}

func TestAuditRejectsBadRequests(t *testing.T) {
	a := &authaudit.Auditor{Resolver: &spf.DNSClient{Server: "127.0.0.1:1"}}
	for _, req := range []authaudit.Request{
		{},
		{Domain: "localhost"},
		{Domain: "example.com", IPs: []netip.Addr{{}}},
		{Domain: "example.com", EHLONames: map[netip.Addr]string{{}: "mta.example.com"}},
	} {
		if _, err := a.Audit(context.Background(), req, auditNow); !errors.Is(err, authaudit.ErrInvalidRequest) {
			t.Errorf("Audit(%+v) = %v, want ErrInvalidRequest", req, err)
		}
	}
}

func TestParsePrivateKey(t *testing.T) {
	for _, name := range []string{"rsa2048.pem", "rsa2048-pkcs1.pem", "ed25519.pem"} {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := authaudit.ParsePrivateKey(b); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, bad := range []string{"", "not pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"} {
		if _, err := authaudit.ParsePrivateKey([]byte(bad)); !errors.Is(err, authaudit.ErrKey) {
			t.Errorf("ParsePrivateKey(%q) = %v, want ErrKey", bad, err)
		}
	}
}

// Each IP of a pool may greet with its own name; each is checked against
// its own forward-confirmed reverse name.
func TestAuditPerIPEHLONames(t *testing.T) {
	key := loadKey(t, "rsa2048.pem")
	z := world(t, key)
	arpa, _ := dns.ReverseAddr(ip2.String())
	z.Delete(arpa, dns.TypePTR)
	z.ReversePTR(ip2, "mta-11.example.com")
	z.Addr("mta-11.example.com", ip2)
	req := request(key)
	req.EHLONames = map[netip.Addr]string{ip2: "MTA-11.example.com."}
	if c := check(t, audit(t, z, req), "ptr"); !c.OK {
		t.Errorf("ptr: %q", c.Problems)
	}
}
