package spf_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/spf"
	"github.com/mailwave/mailwave/pkg/spf/dnstest"
)

var testNow = time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)

// serve starts a loopback DNS server for z and returns a client of it.
func serve(t *testing.T, z *dnstest.Zone, timeout time.Duration) (*spf.DNSClient, *dnstest.Server) {
	t.Helper()
	srv, err := dnstest.Start(z)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	return &spf.DNSClient{Server: srv.Addr(), Timeout: timeout}, srv
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// testZone is a small world of senders.
func testZone() *dnstest.Zone {
	z := dnstest.NewZone()
	z.TXT("example.com", "v=spf1 ip4:192.0.2.0/24 a:mail.example.com mx include:_spf.partner.example -all exp=why.example.com")
	z.TXT("example.com", "google-site-verification=abc")
	z.TXT("why.example.com", "%{i} may not send for %{d} (", "%{l})")
	z.Addr("mail.example.com", addr("198.51.100.10"))
	z.Addr("mail.example.com", addr("2001:db8::10"))
	z.MX("example.com", 10, "mx1.example.com")
	z.MX("example.com", 20, "mx2.example.com")
	z.Addr("mx2.example.com", addr("198.51.100.20"))
	z.TXT("_spf.partner.example", "v=spf1 ip4:203.0.113.0/28 ~all")
	z.TXT("soft.example.com", "v=spf1 ip4:192.0.2.1 ~all")
	z.TXT("late-error.example.com", "v=spf1 ip4:192.0.2.1 -all bogus")
	z.TXT("two.example.com", "v=spf1 -all")
	z.TXT("two.example.com", "v=spf1 +all")
	z.TXT("split.example.com", "v=spf1 ip4:192.0.2.1", " -all")
	z.TXT("norecord.example.com", "just text")
	z.TXT("redir.example.com", "v=spf1 ip4:198.51.100.99 redirect=example.com")
	z.TXT("incnone.example.com", "v=spf1 include:norecord.example.com -all")
	z.TXT("ptr.example.com", "v=spf1 ptr -all")
	z.ReversePTR(addr("198.51.100.10"), "mail.ptr.example.com")
	z.Addr("mail.ptr.example.com", addr("198.51.100.10"))
	z.ReversePTR(addr("198.51.100.11"), "liar.ptr.example.com")
	z.TXT("exists.example.com", "v=spf1 exists:%{l}.allow.example.com -all")
	z.Addr("a\\b c.allow.example.com", addr("127.0.0.2"))
	z.TXT("void.example.com", "v=spf1 a:n1.example.com a:n2.example.com a:n3.example.com ip4:192.0.2.1 -all")
	var many []string
	for i := range 11 {
		name := fmt.Sprintf("i%d.example.com", i)
		many = append(many, "include:"+name)
		z.TXT(name, "v=spf1 ip4:10.0.0.1 -all")
	}
	z.TXT("toomany.example.com", "v=spf1 "+strings.Join(many, " ")+" ip4:192.0.2.1 -all")
	z.TXT("helo.example.com", "v=spf1 a -all")
	z.Addr("helo.example.com", addr("192.0.2.77"))
	return z
}

func TestCheck(t *testing.T) {
	client, _ := serve(t, testZone(), 2*time.Second)
	checker := &spf.Checker{Resolver: client}
	tests := []struct {
		name     string
		q        spf.Query
		want     spf.Result
		wantErr  error
		wantTerm string
		wantExp  string
	}{
		{name: "ip4 range", q: spf.Query{IP: addr("192.0.2.55"), Sender: "a@example.com"}, want: spf.Pass, wantTerm: "ip4:192.0.2.0/24"},
		{name: "a v4", q: spf.Query{IP: addr("198.51.100.10"), Sender: "a@example.com"}, want: spf.Pass, wantTerm: "a:mail.example.com"},
		{name: "a v6", q: spf.Query{IP: addr("2001:db8::10"), Sender: "a@example.com"}, want: spf.Pass, wantTerm: "a:mail.example.com"},
		{name: "mapped v4 is v4", q: spf.Query{IP: addr("::ffff:198.51.100.10"), Sender: "a@example.com"}, want: spf.Pass},
		{name: "mx second host", q: spf.Query{IP: addr("198.51.100.20"), Sender: "a@example.com"}, want: spf.Pass, wantTerm: "mx"},
		{name: "include pass", q: spf.Query{IP: addr("203.0.113.5"), Sender: "a@example.com"}, want: spf.Pass, wantTerm: "include:_spf.partner.example"},
		{name: "fail with explanation", q: spf.Query{IP: addr("203.0.113.99"), Sender: "bob@example.com"}, want: spf.Fail, wantTerm: "-all",
			wantExp: "203.0.113.99 may not send for example.com (bob)"},
		{name: "softfail", q: spf.Query{IP: addr("192.0.2.2"), Sender: "a@soft.example.com"}, want: spf.SoftFail},
		{name: "syntax error after match", q: spf.Query{IP: addr("192.0.2.1"), Sender: "a@late-error.example.com"}, want: spf.PermError, wantErr: spf.ErrSyntax},
		{name: "two records", q: spf.Query{IP: addr("192.0.2.1"), Sender: "a@two.example.com"}, want: spf.PermError, wantErr: spf.ErrMultipleRecords},
		{name: "strings joined", q: spf.Query{IP: addr("192.0.2.2"), Sender: "a@split.example.com"}, want: spf.Fail},
		{name: "no spf record", q: spf.Query{IP: addr("192.0.2.1"), Sender: "a@norecord.example.com"}, want: spf.None, wantErr: spf.ErrNoRecord},
		{name: "nxdomain", q: spf.Query{IP: addr("192.0.2.1"), Sender: "a@nowhere.example.com"}, want: spf.None, wantErr: spf.ErrNoRecord},
		{name: "single label", q: spf.Query{IP: addr("192.0.2.1"), Sender: "a@localhost"}, want: spf.None, wantErr: spf.ErrMalformedDomain},
		{name: "redirect", q: spf.Query{IP: addr("192.0.2.9"), Sender: "a@redir.example.com"}, want: spf.Pass},
		{name: "redirect uses target exp", q: spf.Query{IP: addr("203.0.113.99"), Sender: "eve@redir.example.com"}, want: spf.Fail,
			wantExp: "203.0.113.99 may not send for example.com (eve)"},
		{name: "include without record", q: spf.Query{IP: addr("192.0.2.1"), Sender: "a@incnone.example.com"}, want: spf.PermError, wantErr: spf.ErrIncludeNone},
		{name: "ptr validated", q: spf.Query{IP: addr("198.51.100.10"), Sender: "a@ptr.example.com"}, want: spf.Pass, wantTerm: "ptr"},
		{name: "ptr not validated", q: spf.Query{IP: addr("198.51.100.11"), Sender: "a@ptr.example.com"}, want: spf.Fail},
		{name: "exists with odd local part", q: spf.Query{IP: addr("192.0.2.1"), Sender: "a\\b c@exists.example.com"}, want: spf.Pass},
		{name: "exists no", q: spf.Query{IP: addr("192.0.2.1"), Sender: "z@exists.example.com"}, want: spf.Fail},
		{name: "void lookup limit", q: spf.Query{IP: addr("192.0.2.1"), Sender: "a@void.example.com"}, want: spf.PermError, wantErr: spf.ErrVoidLookupLimit},
		{name: "lookup limit", q: spf.Query{IP: addr("192.0.2.1"), Sender: "a@toomany.example.com"}, want: spf.PermError, wantErr: spf.ErrLookupLimit},
		{name: "helo identity", q: spf.Query{IP: addr("192.0.2.77"), Helo: "helo.example.com"}, want: spf.Pass},
		{name: "invalid ip", q: spf.Query{Sender: "a@example.com"}, want: spf.PermError, wantErr: spf.ErrInvalidIP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := checker.Check(context.Background(), tt.q, testNow)
			if v.Result != tt.want {
				t.Fatalf("result %s (%v), want %s", v.Result, v.Err, tt.want)
			}
			if tt.wantErr != nil && !errors.Is(v.Err, tt.wantErr) {
				t.Errorf("err %v, want %v", v.Err, tt.wantErr)
			}
			if tt.wantTerm != "" && v.Term != tt.wantTerm {
				t.Errorf("term %q, want %q", v.Term, tt.wantTerm)
			}
			if v.Explanation != tt.wantExp {
				t.Errorf("explanation %q, want %q", v.Explanation, tt.wantExp)
			}
			if v.Lookups > spf.MaxLookups {
				t.Errorf("%d lookups, over the limit", v.Lookups)
			}
		})
	}
}

func TestCheckCountsLookups(t *testing.T) {
	client, _ := serve(t, testZone(), 2*time.Second)
	v := (&spf.Checker{Resolver: client}).Check(context.Background(),
		spf.Query{IP: addr("203.0.113.99"), Sender: "a@example.com"}, testNow)
	// a, mx and include each cost one lookup; ip4 and all none.
	if v.Lookups != 3 {
		t.Errorf("lookups = %d, want 3", v.Lookups)
	}
}

func TestCheckTimeoutIsTempError(t *testing.T) {
	z := dnstest.NewZone()
	z.Timeout("slow.example.com")
	z.TXT("inc.example.com", "v=spf1 include:slow.example.com -all")
	client, _ := serve(t, z, 150*time.Millisecond)
	checker := &spf.Checker{Resolver: client}
	for _, sender := range []string{"a@slow.example.com", "a@inc.example.com"} {
		v := checker.Check(context.Background(), spf.Query{IP: addr("192.0.2.1"), Sender: sender}, testNow)
		if v.Result != spf.TempError || !errors.Is(v.Err, spf.ErrDNS) {
			t.Errorf("%s: %s (%v), want temperror", sender, v.Result, v.Err)
		}
		var dnsErr *net.DNSError
		if !errors.As(v.Err, &dnsErr) || !dnsErr.IsTimeout {
			t.Errorf("%s: error %v is not a DNS timeout", sender, v.Err)
		}
	}
}

func TestDNSClientFallsBackToTCP(t *testing.T) {
	z := dnstest.NewZone()
	// Far more than fits a UDP answer, so the server truncates.
	for i := range 12 {
		z.TXT("big.example.com", fmt.Sprintf("filler-%02d-%s", i, strings.Repeat("x", 400)))
	}
	z.TXT("big.example.com", "v=spf1 ip4:192.0.2.1 -all")
	client, srv := serve(t, z, 2*time.Second)
	txts, err := client.LookupTXT(context.Background(), "big.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if len(txts) != 13 {
		t.Fatalf("%d records, want 13", len(txts))
	}
	if len(txts[0]) != len("filler-00-")+400 {
		t.Errorf("a 410-byte record split in two strings came back as %d bytes", len(txts[0]))
	}
	if st := srv.Stats(); st.UDP != 1 || st.TCP != 1 {
		t.Errorf("stats %+v, want one UDP then one TCP query", st)
	}
	v := (&spf.Checker{Resolver: client}).Check(context.Background(), spf.Query{IP: addr("192.0.2.1"), Sender: "a@big.example.com"}, testNow)
	if v.Result != spf.Pass {
		t.Errorf("result %s (%v), want pass", v.Result, v.Err)
	}
}

func TestDNSClientAnswers(t *testing.T) {
	z := dnstest.NewZone()
	z.MX("example.com", 20, "b.example.com")
	z.MX("example.com", 10, "a.example.com")
	z.MX("null.example.com", 0, "")
	z.Addr("host.example.com", addr("192.0.2.1"))
	z.Addr("host.example.com", addr("2001:db8::1"))
	z.ReversePTR(addr("2001:db8::1"), "host.example.com")
	z.Exists("empty.example.com")
	client, _ := serve(t, z, 2*time.Second)
	ctx := context.Background()

	mxs, err := client.LookupMX(ctx, "example.com")
	if err != nil || len(mxs) != 2 || mxs[0].Host != "a.example.com." || mxs[0].Pref != 10 {
		t.Errorf("LookupMX = %v, %v; want a.example.com. first", mxs, err)
	}
	mxs, err = client.LookupMX(ctx, "null.example.com")
	if err != nil || len(mxs) != 1 || mxs[0].Host != "." {
		t.Errorf("null MX = %v, %v", mxs, err)
	}
	ips, err := client.LookupNetIP(ctx, "ip", "host.example.com")
	if err != nil || len(ips) != 2 {
		t.Errorf("LookupNetIP ip = %v, %v", ips, err)
	}
	ips, err = client.LookupNetIP(ctx, "ip6", "host.example.com")
	if err != nil || len(ips) != 1 || ips[0] != addr("2001:db8::1") {
		t.Errorf("LookupNetIP ip6 = %v, %v", ips, err)
	}
	names, err := client.LookupAddr(ctx, "2001:db8::1")
	if err != nil || len(names) != 1 || names[0] != "host.example.com." {
		t.Errorf("LookupAddr = %v, %v", names, err)
	}
	for _, name := range []string{"empty.example.com", "missing.example.com", "example.com" /* MX only */} {
		_, err := client.LookupTXT(ctx, name)
		var dnsErr *net.DNSError
		if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
			t.Errorf("LookupTXT(%s) = %v, want not found", name, err)
		}
	}
}

func TestDNSClientUnreachableServer(t *testing.T) {
	// A UDP socket that never answers: the client must give up within its
	// timeout and call it a timeout.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	client := &spf.DNSClient{Server: pc.LocalAddr().String(), Timeout: 100 * time.Millisecond}
	start := time.Now()
	_, err = client.LookupTXT(context.Background(), "example.com")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsTimeout || !dnsErr.Temporary() {
		t.Fatalf("err = %v, want a temporary timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}
