package fblparser_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/mailwave/mailwave/pkg/arf"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/fbl-parser/fblparser"
)

// TestTrustDKIM checks SMTP reports against a DNS server on loopback that
// publishes the reporters' DKIM keys.
func TestTrustDKIM(t *testing.T) {
	d := newDNSServer(t)
	yahoo := reporterKey(t, d, "yahoo.com")
	forger := reporterKey(t, d, "forger.example")
	outage := reporterKey(t, d, "outage.example")
	d.setFailing("fbl._domainkey.outage.example")

	trust := &fblparser.Trust{
		SMTP: fblparser.SourceTrust{Trusted: true, Domains: []string{"yahoo.com", "outage.example"}, RequireDKIM: true},
		Mailboxes: map[string]fblparser.SourceTrust{
			"strict": {Trusted: true, Domains: []string{"yahoo.com"}, RequireDKIM: true},
			"loose":  {Trusted: true},
		},
		LookupTXT: fblparser.ResolverLookupTXT(d.addr),
	}
	body := arfReport(t, reportFields{Reporter: "feedback@arf.mail.yahoo.com", FeedbackType: "abuse",
		ReturnPath: "b@bounces.shop.example", ShownRcpt: "redacted@yahoo.com", SourceIP: "127.0.0.3", MessageID: "m-1@shop.example"})
	fromForger := arfReport(t, reportFields{Reporter: "abuse@forger.example", FeedbackType: "abuse",
		ReturnPath: "b@bounces.shop.example", ShownRcpt: "redacted@yahoo.com", SourceIP: "127.0.0.3", MessageID: "m-1@shop.example"})
	fromOutage := arfReport(t, reportFields{Reporter: "fbl@outage.example", FeedbackType: "abuse",
		ReturnPath: "b@bounces.shop.example", ShownRcpt: "redacted@yahoo.com", SourceIP: "127.0.0.3", MessageID: "m-1@shop.example"})
	signed := sign(t, yahoo, "yahoo.com", body)
	tampered := bytes.Replace(signed, []byte("Everything must go."), []byte("Nothing must go."), 1)

	for _, tc := range []struct {
		name      string
		source    string
		mailFrom  string
		raw       []byte
		trusted   bool
		temporary bool
	}{
		{"signed by the reporter's domain", "smtp", "", signed, true, false},
		{"unsigned", "smtp", "", body, false, false},
		{"body changed after signing", "smtp", "", tampered, false, false},
		{"signed by another domain, claiming to be the reporter", "smtp", "", sign(t, forger, "forger.example", body), false, false},
		{"reporter not configured, validly signed", "smtp", "", sign(t, forger, "forger.example", fromForger), false, false},
		{"envelope of the reporter, unsigned", "smtp", "fbl@yahoo.com", fromForger, false, false},
		{"key lookup fails: decided later", "smtp", "", sign(t, outage, "outage.example", fromOutage), false, true},
		{"mailbox requiring dkim, signed", "imap:strict", "", signed, true, false},
		{"mailbox requiring dkim, unsigned", "imap:strict", "", body, false, false},
		{"mailbox without reporter list", "imap:loose", "", fromForger, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := arf.Parse(tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			in := &mailwavev1.InboundMessage{Raw: tc.raw, Source: tc.source, MailFrom: tc.mailFrom}
			ok, why, err := trust.Check(in, rep)
			if tc.temporary {
				if !errors.Is(err, fblparser.ErrTrustTemporary) {
					t.Fatalf("Check = %v, %q, %v; want ErrTrustTemporary", ok, why, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.trusted {
				t.Fatalf("trusted = %v (%s), want %v", ok, why, tc.trusted)
			}
			t.Logf("why: %s", why)
			if !ok && why == "" {
				t.Error("an untrusted report needs a reason")
			}
		})
	}
}
