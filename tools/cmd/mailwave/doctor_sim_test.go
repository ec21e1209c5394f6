package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/mailwave/mailwave/pkg/ispsim"
	"github.com/mailwave/mailwave/pkg/testenv"
)

// doctorReport is the JSON shape `mailwave doctor --json` promises,
// decoded strictly: no other field may appear.
type doctorReport struct {
	Domain string `json:"domain"`
	Checks []struct {
		Name     string   `json:"name"`
		OK       bool     `json:"ok"`
		Problems []string `json:"problems"`
		Fix      string   `json:"fix"`
	} `json:"checks"`
}

// simSender publishes, in the simulator's DNS, a sending domain set up as
// it should be: shop.example sends from 127.0.0.3 (PTR
// mta2.mailwave.test in the shipped profile) with return path
// bounce.shop.example, SPF through an include, DKIM selector mw, DMARC
// p=reject, and an MX for bounces.
func simSender(z *ispsim.Zone, dkimKey string) {
	z.SetTXT("bounce.shop.example", "v=spf1 include:_spf.shop.example -all")
	z.SetTXT("_spf.shop.example", "v=spf1 ip4:127.0.0.0/29 -all")
	z.SetTXT("mw._domainkey.shop.example", dkimKey)
	z.SetTXT("_dmarc.shop.example", "v=DMARC1; p=reject; rua=mailto:dmarc@shop.example")
	z.SetMX("bounce.shop.example", ispsim.MX{Pref: 10, Host: "mx.shop.example"})
	z.SetA("mx.shop.example", netip.MustParseAddr("127.0.0.20"))
	for _, n := range []string{"big.shop.example", "a1.shop.example", "a2.shop.example"} {
		z.Remove(n)
	}
}

func ed25519Key(t *testing.T) (pemPath, record string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pemPath = filepath.Join(t.TempDir(), "dkim.pem")
	if err := os.WriteFile(pemPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return pemPath, "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
}

// The doctor against records the ISP simulator's DNS serves: the correct
// domain passes, and each mistake is named with the record to publish.
func TestDoctorAgainstTheSimulatorsDNS(t *testing.T) {
	prof, err := ispsim.DefaultProfile()
	if err != nil {
		t.Fatal(err)
	}
	sim, err := ispsim.Start(testenv.Context(t), prof, ispsim.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	z := sim.DNS()
	keyPath, keyRecord := ed25519Key(t)
	_, otherRecord := ed25519Key(t)
	doctor := func(t *testing.T) (doctorReport, error) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"doctor", "shop.example", "--ips", "127.0.0.3", "--selector", "mw",
			"--dkim-key", keyPath, "--bounce-domain", "bounce.shop.example", "--ehlo", "mta2.mailwave.test",
			"--dns", sim.DNSAddr(), "--json"}, &stdout, &stderr)
		dec := json.NewDecoder(&stdout)
		dec.DisallowUnknownFields()
		var rep doctorReport
		if derr := dec.Decode(&rep); derr != nil {
			t.Fatalf("doctor --json: %v\n%s", derr, stdout.String())
		}
		return rep, err
	}

	simSender(z, keyRecord)
	rep, err := doctor(t)
	if err != nil || rep.Domain != "shop.example" || len(rep.Checks) != 5 {
		t.Fatalf("correct domain: %v %+v", err, rep)
	}
	for _, c := range rep.Checks {
		if !c.OK || len(c.Problems) != 0 || c.Problems == nil || c.Fix != "" {
			t.Errorf("correct domain, %s: %+v", c.Name, c)
		}
	}

	for _, tc := range []struct {
		name, check, problem, fix string
		change                    func()
	}{
		{
			name:    "missing include",
			change:  func() { z.SetTXT("bounce.shop.example", "v=spf1 ip4:198.51.100.7 -all") },
			check:   "spf",
			problem: "127.0.0.3 is in the pool but the SPF record of bounce.shop.example does not authorise it: result fail",
			fix:     `bounce.shop.example. TXT "v=spf1 ip4:127.0.0.3 ip4:198.51.100.7 -all"`,
		},
		{
			name: "second SPF record",
			change: func() {
				z.SetTXT("bounce.shop.example", "v=spf1 include:_spf.shop.example -all", "v=spf1 ip4:198.51.100.7 ~all")
			},
			check:   "spf",
			problem: "publishes 2 SPF records: every receiver returns permerror",
			fix:     `bounce.shop.example. TXT "v=spf1 ip4:127.0.0.3 include:_spf.shop.example ip4:198.51.100.7 -all"`,
		},
		{
			name: "more than ten lookups",
			change: func() {
				z.SetTXT("bounce.shop.example", "v=spf1 a mx include:_spf.shop.example include:big.shop.example -all")
				z.SetTXT("big.shop.example", "v=spf1 a:a1.shop.example a:a2.shop.example a:a3.shop.example a:a4.shop.example "+
					"a:a5.shop.example a:a6.shop.example a:a7.shop.example ~all")
			},
			check:   "spf",
			problem: "needs 11 DNS lookups when every term is evaluated, more than the 10",
			fix:     `bounce.shop.example. TXT "v=spf1 a mx include:_spf.shop.example -all"`,
		},
		{
			name:    "missing DKIM key",
			change:  func() { z.Remove("mw._domainkey.shop.example", dns.TypeTXT) },
			check:   "dkim",
			problem: "no DKIM key is published at mw._domainkey.shop.example",
			fix:     `mw._domainkey.shop.example. TXT "` + keyRecord + `"`,
		},
		{
			name:    "mismatched DKIM key",
			change:  func() { z.SetTXT("mw._domainkey.shop.example", otherRecord) },
			check:   "dkim",
			problem: "does not match the private key",
			fix:     `mw._domainkey.shop.example. TXT "` + keyRecord + `"`,
		},
		{
			name:    "missing DMARC record",
			change:  func() { z.Remove("_dmarc.shop.example", dns.TypeTXT) },
			check:   "dmarc",
			problem: "no DMARC record at _dmarc.shop.example",
			fix:     `_dmarc.shop.example. TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@shop.example"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			simSender(z, keyRecord)
			tc.change()
			rep, err := doctor(t)
			if !errors.Is(err, errDoctorFailed) {
				t.Fatalf("doctor = %v, want errDoctorFailed", err)
			}
			for _, c := range rep.Checks {
				if c.Name != tc.check {
					if !c.OK {
						t.Errorf("%s failed too: %q", c.Name, c.Problems)
					}
					continue
				}
				if c.OK || !strings.Contains(strings.Join(c.Problems, "\n"), tc.problem) {
					t.Errorf("%s: no problem with %q in %q", c.Name, tc.problem, c.Problems)
				}
				if c.Fix != tc.fix {
					t.Errorf("%s fix\n%s\nwant\n%s", c.Name, c.Fix, tc.fix)
				}
			}
		})
	}
}
