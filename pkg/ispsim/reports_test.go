package ispsim_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailwave/mailwave/pkg/ispsim"
)

func TestAsyncDSNToReturnPath(t *testing.T) {
	sim, clk := start(t, nil)
	inbound, addr := startSink(t)
	if err := sim.SetRoute("bounce.mailwave.test", addr); err != nil {
		t.Fatal(err)
	}
	const from, to = "b+token123@bounce.mailwave.test", "dsn-full-7@gmail.com"
	if err := send(t, sim, "127.0.0.2", from, to, msg("news@mailwave.test", to, "dsn-1", "x")); err != nil {
		t.Fatalf("the message is accepted first: %v", err)
	}
	snap := sim.Ledger().Snapshot()
	if m := snap.MessagesWithID("dsn-1"); len(m) != 1 || m[0].Fates[to] != "dsn" {
		t.Fatalf("ledger %+v", m)
	}
	if len(snap.ReportsOf("dsn")) != 0 {
		t.Fatal("DSN sent before its delay")
	}
	clk.Advance(2 * time.Minute) // the dsn-full* rule's delay

	got := inbound.next(t, sim)
	if got.from != "" || got.to != from {
		t.Errorf("envelope %q → %q, want <> → %s", got.from, got.to, from)
	}
	parts := reportParts(t, got.data, "delivery-status")
	ds := fields(t, parts["message/delivery-status"])
	if len(ds) != 2 {
		t.Fatalf("delivery-status blocks: %d", len(ds))
	}
	if v := ds[0].Get("Reporting-Mta"); v != "dns; mx.google.com" {
		t.Errorf("Reporting-MTA %q", v)
	}
	rcpt := ds[1]
	if rcpt.Get("Final-Recipient") != "rfc822; "+to || rcpt.Get("Action") != "failed" || rcpt.Get("Status") != "5.2.2" {
		t.Errorf("recipient fields %v", rcpt)
	}
	if !strings.Contains(rcpt.Get("Diagnostic-Code"), "552") {
		t.Errorf("Diagnostic-Code %q", rcpt.Get("Diagnostic-Code"))
	}
	if !bytes.Contains(parts["text/rfc822-headers"], []byte("Message-ID: <dsn-1>")) {
		t.Errorf("returned headers %q", parts["text/rfc822-headers"])
	}
	snap, err := sim.Ledger().Wait(ctxT(t), func(s *ispsim.Snapshot) bool { return len(s.ReportsOf("dsn")) == 1 })
	if err != nil {
		t.Fatal(err)
	}
	if r := snap.ReportsOf("dsn")[0]; !r.Delivered() || r.Addr != addr || r.Rcpt != to || r.Status != "5.2.2" {
		t.Errorf("report %+v", r)
	}
}

func TestDSNRoutedByMX(t *testing.T) {
	// Without a route, the return path's MX is resolved in the
	// simulator's DNS: here it points at a sink on 127.0.0.1.
	inbound, addr := startSink(t)
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	sim, clk := start(t, func(p *ispsim.Profile) {
		p.OutboundPort = atoi(t, port)
	})
	sim.DNS().SetMX("returns.example", ispsim.MX{Pref: 10, Host: "in.returns.example"})
	sim.DNS().SetA("in.returns.example", mustAddr("127.0.0.1"))
	const from, to = "r@returns.example", "dsn-unknown-1@yahoo.com"
	if err := send(t, sim, "127.0.0.2", from, to, msg(from, to, "dsn-2", "x")); err != nil {
		t.Fatal(err)
	}
	clk.Advance(3 * time.Minute)
	got := inbound.next(t, sim)
	if got.to != from {
		t.Errorf("DSN to %s", got.to)
	}
	ds := fields(t, reportParts(t, got.data, "delivery-status")["message/delivery-status"])
	if ds[1].Get("Status") != "5.1.1" {
		t.Errorf("status %q", ds[1].Get("Status"))
	}
}

func TestComplaintInIMAPMailbox(t *testing.T) {
	sim, clk := start(t, nil)
	const from, to = "b@bounce.mailwave.test", "complain-4@gmail.com"
	data := "From: News <news@mailwave.test>\r\nTo: <" + to + ">\r\nSubject: offers\r\n" +
		"Message-ID: <arf-1@mailwave.test>\r\nFeedback-ID: camp42:brand7:bulk:mailwave\r\n\r\nbuy\r\n"
	if err := send(t, sim, "127.0.0.2", from, to, data); err != nil {
		t.Fatal(err)
	}
	clk.Advance(10 * time.Minute)
	if _, err := sim.Ledger().Wait(ctxT(t), func(s *ispsim.Snapshot) bool {
		r := s.ReportsOf("arf")
		return len(r) == 1 && r[0].Delivered()
	}); err != nil {
		t.Fatal(err)
	}

	c, err := imapclient.DialInsecure(sim.IMAPAddr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("fbl@mailwave.test", "fbl-secret").Wait(); err != nil {
		t.Fatal(err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.NumMessages != 1 {
		t.Fatalf("INBOX has %d messages", sel.NumMessages)
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	report := msgs[0].FindBodySection(&imap.FetchItemBodySection{})
	parts := reportParts(t, report, "feedback-report")
	fr := fields(t, parts["message/feedback-report"])[0]
	if fr.Get("Feedback-Type") != "abuse" || fr.Get("Source-Ip") != "127.0.0.2" ||
		fr.Get("Original-Rcpt-To") != "<"+to+">" || fr.Get("Original-Mail-From") != "<"+from+">" {
		t.Errorf("feedback report %v", fr)
	}
	orig := parts["message/rfc822"]
	for _, want := range []string{"Message-ID: <arf-1@mailwave.test>", "Feedback-ID: camp42:brand7:bulk:mailwave"} {
		if !bytes.Contains(orig, []byte(want)) {
			t.Errorf("reported message lacks %q", want)
		}
	}
	if err := c.Logout().Wait(); err != nil {
		t.Error(err)
	}
}

func TestComplaintBySMTPRedacted(t *testing.T) {
	sim, clk := start(t, nil)
	fbl, addr := startSink(t)
	if err := sim.SetRoute("mailwave.test", addr); err != nil {
		t.Fatal(err)
	}
	const from, to = "b@bounce.mailwave.test", "zoe@hotmail.com"
	data := "From: <news@mailwave.test>\r\nTo: Zoe <" + to + ">\r\nSubject: s\r\nReturn-Path: <" + from + ">\r\n" +
		"Message-ID: <arf-2@mailwave.test>\r\n\r\nx\r\n"
	if err := send(t, sim, "127.0.0.2", from, to, data); err != nil {
		t.Fatal(err)
	}
	// Force a complaint for this message (the provider's share is 0).
	if err := sim.Complain("<arf-2@mailwave.test>", ""); err != nil {
		t.Fatal(err)
	}
	got := fbl.next(t, sim)
	if got.to != "fbl@mailwave.test" {
		t.Errorf("ARF sent to %s", got.to)
	}
	parts := reportParts(t, got.data, "feedback-report")
	fr := fields(t, parts["message/feedback-report"])[0]
	if fr.Get("Original-Rcpt-To") != "<redacted@hotmail.com>" {
		t.Errorf("Original-Rcpt-To %q", fr.Get("Original-Rcpt-To"))
	}
	orig := string(parts["message/rfc822"])
	if strings.Contains(orig, "zoe@") || !strings.Contains(orig, "redacted@hotmail.com") {
		t.Errorf("To not redacted: %q", orig)
	}
	for _, want := range []string{"Message-Id: <arf-2@mailwave.test>", "Return-Path: <" + from + ">"} {
		if !strings.Contains(strings.ToLower(orig), strings.ToLower(want)) {
			t.Errorf("reported message lacks %q", want)
		}
	}
	_ = clk
	if err := sim.Complain("nope@x", ""); err == nil {
		t.Error("complaint about an unknown message")
	}
	// The report is signed by the loop's domain, and the key is in the
	// simulator's DNS: it verifies, and a tampered copy does not.
	lookup := func(name string) ([]string, error) {
		return (&net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, sim.DNSAddr())
		}}).LookupTXT(context.Background(), name)
	}
	verify := func(raw []byte) error {
		vs, err := dkim.VerifyWithOptions(bytes.NewReader(raw), &dkim.VerifyOptions{LookupTXT: lookup})
		if err != nil {
			return err
		}
		if len(vs) != 1 || vs[0].Domain != "hotmail.com" {
			return fmt.Errorf("%d signatures (%v)", len(vs), vs)
		}
		return vs[0].Err
	}
	if err := verify(got.data); err != nil {
		t.Errorf("the report's DKIM signature: %v", err)
	}
	tampered := bytes.Replace(got.data, []byte("redacted@hotmail.com"), []byte("someone@hotmail.com"), 1)
	if err := verify(tampered); err == nil {
		t.Error("a tampered report verifies")
	}
}

func TestComplaintShareDeterministic(t *testing.T) {
	sim, clk := start(t, nil)
	g := sim.Provider("google")
	if err := g.SetComplaints(ispsim.ComplaintConfig{Every: 3, Delay: time.Minute, Delivery: ispsim.DeliveryIMAP, IMAPUser: "fbl@mailwave.test"}); err != nil {
		t.Fatal(err)
	}
	const from = "b@bounce.mailwave.test"
	c, err := client(t, sim, "127.0.0.2", "x@gmail.com")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 9 {
		to := "user" + string(rune('a'+i)) + "@gmail.com"
		if err := transact(c, from, to, msg("news@mailwave.test", to, "share-"+to, "x")); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(time.Minute)
	snap, err := sim.Ledger().Wait(ctxT(t), func(s *ispsim.Snapshot) bool { return len(s.ReportsOf("arf")) == 3 })
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range snap.ReportsOf("arf") {
		got[r.Rcpt] = true
	}
	for _, want := range []string{"userc@gmail.com", "userf@gmail.com", "useri@gmail.com"} {
		if !got[want] {
			t.Errorf("no complaint about %s: %v", want, got)
		}
	}
}

func TestLedgerHandlerAndMetrics(t *testing.T) {
	sim, _ := start(t, nil)
	if err := send(t, sim, "127.0.0.2", "news@mailwave.test", "a@gmail.com", msg("news@mailwave.test", "a@gmail.com", "h-1", "x")); err != nil {
		t.Fatal(err)
	}
	if err := send(t, sim, "127.0.0.2", "news@mailwave.test", "unknown@gmail.com", msg("news@mailwave.test", "unknown@gmail.com", "h-2", "x")); code(err) != 550 {
		t.Fatal(err)
	}
	body := get(t, sim, "/metrics")
	for _, want := range []string{
		`ispsim_messages_accepted_total{provider="google",source_ip="127.0.0.2"} 1`,
		`ispsim_rejections_total{code="550",provider="google",reason="unknown",source_ip="127.0.0.2"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	js := get(t, sim, "/ledger")
	if !strings.Contains(js, `"message_id": "h-1"`) || strings.Contains(js, `"data":`) {
		t.Errorf("ledger JSON: %.400s", js)
	}
	if !strings.Contains(get(t, sim, "/ledger?data=1"), `"data":`) {
		t.Error("data=1 left out the data")
	}
}

func get(t *testing.T, sim *ispsim.Sim, path string) string {
	t.Helper()
	rec := newRecorder()
	sim.Handler().ServeHTTP(rec, newRequest(path))
	b, err := io.ReadAll(rec.Result().Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
