package arf_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/arf"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from what Parse extracts")

func readSample(t testing.TB, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestParse checks the fields the platform acts on, for every sample.
func TestParse(t *testing.T) {
	type want struct {
		variant, feedbackType, sourceIP string
		rcpt                            []string
		recipient                       string
		redacted                        bool
		partType                        string
		full                            bool
		messageID, subject              string
		arrival                         string // UTC, RFC 3339; "" for none
		domains                         []string
		senders                         []string
		incidents                       int
	}
	tests := []struct {
		file string
		want want
	}{
		{"corpus/arf-01.eml", want{ // AOL-style: Received-Date, recipient redacted
			variant: arf.VariantRFC5965, feedbackType: "abuse", sourceIP: "192.0.2.89",
			redacted: true, partType: "message/rfc822", full: true,
			subject: "Kijitora cat family", arrival: "2009-04-29T00:00:00Z",
			domains: []string{"example.ed.jp"}, senders: []string{"support@example.ed.jp"}, incidents: 1,
		}},
		{"corpus/arf-02.eml", want{ // Yahoo: Version 0.1, no Source-IP, PST
			variant: arf.VariantRFC5965, feedbackType: "abuse",
			rcpt:      []string{"this-local-part-does-not-exist-on-yahoo@yahoo.com"},
			recipient: "this-local-part-does-not-exist-on-yahoo@yahoo.com",
			partType:  "message/rfc822", full: true,
			messageID: "<000000000000000000000000.smtp@example.com>", subject: "Nyaaaaaaaan",
			arrival: "2013-04-30T07:45:50Z", domains: []string{"example.com"},
			senders: []string{"shironeko@example.com"}, incidents: 1,
		}},
		{"corpus/arf-11.eml", want{
			variant: arf.VariantRFC5965, feedbackType: "abuse", redacted: true,
			partType: "message/rfc822", full: true,
			messageID: "ffffffffffffffffffffffffff0000000000@example.net", subject: "Nyaaan", incidents: 1,
		}},
		{"corpus/arf-16.eml", want{
			variant: arf.VariantRFC5965, feedbackType: "abuse", sourceIP: "192.0.2.1",
			rcpt: []string{"kijitora@example.com", "sironeko@example.com", "mikeneko@example.com",
				"sabatora@example.com", "sirokiji@example.org", "kuroneko@example.com", "sabineko@example.com"},
			recipient: "kijitora@example.com", partType: "message/rfc822", full: true,
			messageID: "<ffffffffffffffffffffffff0000000@example.jp>", subject: "Nyaan",
			arrival: "2015-04-29T23:34:45Z", domains: []string{"example.com", "example.org"},
			senders: []string{"neko@example.jp"}, incidents: 1,
		}},
		{"corpus/arf-18.eml", want{
			variant: arf.VariantRFC5965, feedbackType: "auth-failure", sourceIP: "192.0.2.222",
			rcpt: []string{"kijitora@example.com"}, recipient: "kijitora@example.com",
			partType: "message/rfc822", full: true,
			messageID: "<000000002.2222222.1500000000022@example.net>", subject: "Nyaan",
			arrival: "2015-04-29T23:34:45Z", domains: []string{"example.net"},
			senders: []string{"sironeko@example.org"}, incidents: 1,
		}},
		{"corpus/arf-19.eml", want{
			variant: arf.VariantRFC5965, feedbackType: "auth-failure", sourceIP: "203.0.113.2",
			recipient: "kijitora@example.org", partType: "text/rfc822-headers",
			messageID: "<000000000.2222222.0000000000002@example.net>", subject: "Nyaan",
			arrival: "2015-04-29T14:34:45Z", domains: []string{"example.net"},
			senders: []string{"sironeko@neko.example.com"}, incidents: 1,
		}},
		{"corpus/arf-20.eml", want{
			variant: arf.VariantRFC5965, feedbackType: "auth-failure", sourceIP: "203.0.113.2",
			recipient: "kijitora@example.org", partType: "text/rfc822-headers",
			messageID: "<000000000eee@example.net>", subject: "Nyaan",
			domains: []string{"example.net"}, senders: []string{"dmarc-bounces@ietf.example.org"}, incidents: 1,
		}},
		{"corpus/arf-21.eml", want{
			variant: arf.VariantRFC5965, feedbackType: "abuse", sourceIP: "198.51.100.224",
			recipient: "kijitora@example.org", partType: "message/rfc822", full: true,
			messageID: "<00000000000000000000000022222222@example.net>", subject: "Nyaan",
			arrival: "2015-04-29T23:34:45Z", senders: []string{"sironeko@example.net"}, incidents: 1,
		}},
		{"corpus/mail-auth-001.eml", want{
			variant: arf.VariantRFC5965, feedbackType: "abuse", redacted: true,
			partType: "message/rfc822", full: true,
			messageID: "8787KJKJ3K4J3K4J3K4J3.mail@example.net", subject: "Earn money", incidents: 1,
		}},
		{"corpus/mail-auth-002.eml", want{ // the reported header ends early (a blank line)
			variant: arf.VariantRFC5965, feedbackType: "abuse", sourceIP: "192.0.2.1",
			rcpt: []string{"user@example.com"}, recipient: "user@example.com",
			partType: "message/rfc822", full: true, arrival: "2005-03-08T18:00:00Z",
			domains: []string{"example.net"}, senders: []string{"somespammer@example.net"}, incidents: 1,
		}},
		{"variants/jmrp.eml", want{
			variant: arf.VariantMicrosoftJMRP, feedbackType: "abuse", sourceIP: "192.0.2.10",
			recipient: "complainer@hotmail.example", partType: "message/rfc822", full: true,
			messageID: "<20261103175800.0123456789abcdef@brand.example.com>", subject: "Café offers",
			senders:   []string{"b3k2t7qz4m5a6b7c8d9e0f1g2h3i4j5k6l7m8n9o0p1q2r3s4t@bounce.brand.example.com"},
			incidents: 1,
		}},
		{"variants/no-report-type.eml", want{
			variant: arf.VariantNoReportType, feedbackType: "abuse", sourceIP: "192.0.2.20",
			rcpt: []string{"reader@isp.example"}, recipient: "reader@isp.example",
			partType: "text/rfc822-headers", messageID: "<autumn-0042@brand.example.com>",
			subject: "Autumn sale", arrival: "2026-11-04T06:55:00Z",
			senders:   []string{"b9z8y7x6w5v4u3t2s1r0q9p8o7n6m5l4k3j2i1h0g9f8e7d6c5@bounce.brand.example.com"},
			incidents: 3,
		}},
		{"variants/mixed-octet-stream.eml", want{
			variant: arf.VariantNoReportType, feedbackType: "fraud", sourceIP: "192.0.2.30",
			rcpt: []string{"user@isp.example"}, recipient: "user@isp.example",
			partType: "application/octet-stream", full: true,
			messageID: "<offer-77@brand.example.com>", subject: "Offer", arrival: "2026-11-05T17:00:00Z",
			domains: []string{"brand.example.com"}, senders: []string{"bounce-77@bounce.brand.example.com"}, incidents: 1,
		}},
		{"variants/text-feedback.eml", want{
			variant: arf.VariantTextFeedback, feedbackType: "not-spam", sourceIP: "2001:db8::25",
			rcpt: []string{"Mixed.Case@isp.example"}, recipient: "Mixed.Case@isp.example",
			partType: "message/rfc822", full: true, messageID: "<weekly-1@brand.example.com>",
			subject: "Weekly", arrival: "2026-11-05T10:00:00Z", incidents: 1,
		}},
		{"variants/inline.eml", want{
			variant: arf.VariantTextFeedback, feedbackType: "abuse", sourceIP: "192.0.2.40",
			rcpt: []string{"redacted@isp.example"}, redacted: true, partType: "inline", full: true,
			messageID: "<deals-9@brand.example.com>", subject: "Deals",
			senders:   []string{"b1a2b3c4d5e6f7g8h9i0j1k2l3m4n5o6p7q8r9s0t1u2v3w4x@bounce.brand.example.com"},
			incidents: 1,
		}},
		{"variants/scomp.eml", want{
			variant: arf.VariantAOLSComp, feedbackType: "abuse", sourceIP: "192.0.2.50",
			redacted: true, partType: "message/rfc822", full: true,
			messageID: "<hello-50@brand.example.com>", subject: "Hello",
			senders: []string{"bounce-50@bounce.brand.example.com"}, incidents: 1,
		}},
		{"variants/no-feedback-part.eml", want{
			variant: arf.VariantNoFeedbackPart, feedbackType: "abuse", sourceIP: "192.0.2.60",
			recipient: "someone@isp.example", partType: "message/rfc822", full: true,
			subject: "Promo", incidents: 1,
		}},
		{"variants/forwarded.eml", want{
			variant: arf.VariantRFC5965, feedbackType: "abuse", sourceIP: "192.0.2.70",
			rcpt: []string{"someone@isp.example"}, recipient: "someone@isp.example",
			partType: "text/rfc822-headers", messageID: "<monthly-70@brand.example.com>",
			subject: "Monthly", arrival: "2026-11-10T08:00:00Z",
			senders: []string{"bounce-70@bounce.brand.example.com"}, incidents: 1,
		}},
		{"variants/crlf-base64.eml", want{
			variant: arf.VariantRFC5965, feedbackType: "opt-out", sourceIP: "2001:db8::1",
			rcpt: []string{"Jane.Doe@isp.example"}, recipient: "Jane.Doe@isp.example",
			partType: "message/rfc822", full: true, messageID: "<news-jane@brand.example.com>",
			subject: "News ✔", arrival: "2026-11-09T17:00:00Z", incidents: 1,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			r, err := arf.Parse(readSample(t, tt.file))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			ip := ""
			if r.SourceIP.IsValid() {
				ip = r.SourceIP.String()
			}
			arrival := ""
			if !r.ArrivalDate.IsZero() {
				arrival = r.ArrivalDate.UTC().Format(time.RFC3339)
			}
			got := want{
				variant: r.Variant, feedbackType: r.FeedbackType, sourceIP: ip,
				rcpt: r.OriginalRcptTo, recipient: r.Recipient(), redacted: r.Redacted,
				partType: r.Reported.PartType, full: r.Reported.Full,
				messageID: r.Reported.MessageID, subject: r.Reported.Subject, arrival: arrival,
				domains: r.ReportedDomains, senders: r.SenderCandidates(), incidents: r.Incidents,
			}
			g, w := describe(got.variant, got.feedbackType, got.sourceIP, got.rcpt, got.recipient, got.redacted,
				got.partType, got.full, got.messageID, got.subject, got.arrival, got.domains, got.senders, got.incidents),
				describe(tt.want.variant, tt.want.feedbackType, tt.want.sourceIP, tt.want.rcpt, tt.want.recipient,
					tt.want.redacted, tt.want.partType, tt.want.full, tt.want.messageID, tt.want.subject,
					tt.want.arrival, tt.want.domains, tt.want.senders, tt.want.incidents)
			if g != w {
				t.Errorf("got  %s\nwant %s", g, w)
			}
			if len(r.Fingerprint) != 64 {
				t.Errorf("Fingerprint = %q, want 64 hex digits", r.Fingerprint)
			}
		})
	}
}

// describe renders the compared fields as one comparable line; nil and
// empty lists read the same.
func describe(vs ...any) string {
	var b strings.Builder
	for _, v := range vs {
		if l, ok := v.([]string); ok && len(l) == 0 {
			v = []string{}
		}
		j, _ := json.Marshal(v)
		b.Write(j)
		b.WriteByte(' ')
	}
	return b.String()
}

func TestParseFields(t *testing.T) {
	r, err := arf.Parse(readSample(t, "corpus/mail-auth-002.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"http://example.net/earn_money.html", "mailto:user@example.com"}; !slices.Equal(r.ReportedURIs, want) {
		t.Errorf("ReportedURIs = %q, want %q", r.ReportedURIs, want)
	}
	if len(r.AuthResults) != 1 || !strings.HasPrefix(r.AuthResults[0], "mail.example.com; spf=fail") {
		t.Errorf("AuthResults = %q", r.AuthResults)
	}
	if r.ReportingMTA != "mail.example.com" || r.UserAgent != "SomeGenerator/1.0" || r.Version != "1" {
		t.Errorf("ReportingMTA, UserAgent, Version = %q, %q, %q", r.ReportingMTA, r.UserAgent, r.Version)
	}
	if got := r.Fields.Get("Removal-Recipient"); got != "user@example.com" {
		t.Errorf("Fields[Removal-Recipient] = %q", got)
	}
	if r.AuthFailure != nil {
		t.Errorf("AuthFailure = %+v, want nil for an abuse report", r.AuthFailure)
	}

	r, err = arf.Parse(readSample(t, "corpus/arf-19.eml"))
	if err != nil {
		t.Fatal(err)
	}
	af := r.AuthFailure
	if af == nil || af.Type != "" || af.DeliveryResult != "delivered" || af.DKIMDomain != "ietf.org; example.net" {
		t.Errorf("AuthFailure = %+v", af)
	}
	if r.OriginalEnvelopeID != "eeeeeeeeeeeeeeeeeeee00--.000000" {
		t.Errorf("OriginalEnvelopeID = %q", r.OriginalEnvelopeID)
	}
	if r.Reported.Full {
		t.Error("Reported.Full for text/rfc822-headers")
	}

	r, err = arf.Parse(readSample(t, "corpus/arf-18.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if r.AuthFailure == nil || r.AuthFailure.Type != "dmarc" {
		t.Errorf("AuthFailure = %+v, want type dmarc", r.AuthFailure)
	}
	if r.ArrivalDateRaw != "Thu, 29 Apr 2015 23:34:45 +0000" {
		t.Errorf("ArrivalDateRaw = %q", r.ArrivalDateRaw)
	}

	r, err = arf.Parse(readSample(t, "corpus/arf-01.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if r.ArrivalDateRaw != "Thu, 29 Apr 2009 00:00:00 -0000 (EST)" {
		t.Errorf("ArrivalDateRaw from Received-Date = %q", r.ArrivalDateRaw)
	}
	if !r.Reported.Redacted || r.Reported.To != "redacted@example.net" {
		t.Errorf("Reported To, Redacted = %q, %v", r.Reported.To, r.Reported.Redacted)
	}
	if got := r.Header.Get("X-Smp-Ip"); got != "192.0.1.45" {
		t.Errorf("Header[X-Smp-Ip] = %q", got)
	}
	if r.Forwarded {
		t.Error("Forwarded for a report received directly")
	}

	r, err = arf.Parse(readSample(t, "variants/forwarded.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if !r.Forwarded || r.Header.Get("Message-Id") != "<report-7@isp.example>" {
		t.Errorf("Forwarded, Header[Message-Id] = %v, %q; want the attached report's", r.Forwarded, r.Header.Get("Message-Id"))
	}
}

func TestRecoveryFields(t *testing.T) {
	r, err := arf.Parse(readSample(t, "variants/jmrp.eml"))
	if err != nil {
		t.Fatal(err)
	}
	rp := r.Reported
	if rp.FeedbackID.SenderID != "mailwave" || !slices.Equal(rp.FeedbackID.Identifiers, []string{"cmp42", "tenant7", "bulk"}) {
		t.Errorf("FeedbackID = %+v", rp.FeedbackID)
	}
	if got := rp.Mailwave.Get("X-Mailwave-Message-Id"); got != "0123456789abcdef0123456789abcdef" {
		t.Errorf("Mailwave[X-Mailwave-Message-Id] = %q", got)
	}
	if got := rp.Mailwave.Get("X-Mailwave-Tenant"); got != "tenant7" || len(rp.Mailwave) != 2 {
		t.Errorf("Mailwave = %v", rp.Mailwave)
	}
	if rp.ReturnPath != "b3k2t7qz4m5a6b7c8d9e0f1g2h3i4j5k6l7m8n9o0p1q2r3s4t@bounce.brand.example.com" {
		t.Errorf("ReturnPath = %q", rp.ReturnPath)
	}
	if rp.From != "Brand News <news@brand.example.com>" || rp.Date != "Tue, 3 Nov 2026 17:58:00 +0000" {
		t.Errorf("From, Date = %q, %q", rp.From, rp.Date)
	}
	if !rp.Redacted || !slices.Equal(rp.ToAddrs, []string{"xxxxxxxx@hotmail.example"}) {
		t.Errorf("To redaction: ToAddrs %q Redacted %v", rp.ToAddrs, rp.Redacted)
	}
	if r.Redacted {
		t.Error("Report.Redacted although X-HmXmrOriginalRecipient names the recipient")
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		raw  []byte
		want error
	}{
		{"delivery status notification", readSample(t, "errors/dsn.eml"), arf.ErrNotReport},
		{"forwarded message", readSample(t, "errors/plain.eml"), arf.ErrNotReport},
		{"declared report without parts", readSample(t, "errors/no-boundary.eml"), arf.ErrMalformed},
		{"empty", nil, arf.ErrNotReport},
		{"no header", []byte("\r\njust a body\r\n"), arf.ErrNotReport},
		{"binary", []byte{0, 1, 2, 0xff, '\n', ':', '\n'}, arf.ErrNotReport},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := arf.Parse(tt.raw)
			if !errors.Is(err, tt.want) || r != nil {
				t.Errorf("Parse = %v, %v; want nil, %v", r, err, tt.want)
			}
			if arf.IsReport(tt.raw) {
				t.Error("IsReport = true")
			}
		})
	}
	if !arf.IsReport(readSample(t, "corpus/arf-01.eml")) {
		t.Error("IsReport(arf-01) = false")
	}
}

// TestFingerprint checks what the fingerprint covers: a second delivery
// of one report matches, another recipient or type does not.
func TestFingerprint(t *testing.T) {
	base := readSample(t, "corpus/arf-16.eml")
	fp := func(raw []byte) string {
		t.Helper()
		r, err := arf.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		return r.Fingerprint
	}
	want := fp(base)
	redelivered := append([]byte("Received: from relay.example by mx.example; Fri, 1 May 2015 00:00:00 +0000\n"),
		bytes.Replace(base, []byte("Message-Id: <20150429233445.0000000000@fbl-02"), []byte("Message-Id: <other@fbl-02"), 1)...)
	crlf := bytes.ReplaceAll(base, []byte("\n"), []byte("\r\n"))
	for name, raw := range map[string][]byte{"redelivered": redelivered, "crlf": crlf} {
		if got := fp(raw); got != want {
			t.Errorf("%s: fingerprint %s, want %s", name, got, want)
		}
	}
	changed := map[string][]byte{
		"recipient":    bytes.Replace(base, []byte("Original-Rcpt-To: sabineko@"), []byte("Original-Rcpt-To: tabby@"), 1),
		"type":         bytes.Replace(base, []byte("Feedback-Type: abuse"), []byte("Feedback-Type: fraud"), 1),
		"arrival date": bytes.Replace(base, []byte("Arrival-Date: Thu, 29 Apr 2015 23:34:45"), []byte("Arrival-Date: Thu, 29 Apr 2015 23:34:46"), 1),
		"message-id":   bytes.Replace(base, []byte("<ffffffffffffffffffffffff0000000@"), []byte("<eeeeeeeeeeeeeeeeeeeeeeee0000000@"), 1),
	}
	for name, raw := range changed {
		if bytes.Equal(raw, base) {
			t.Fatalf("%s: replacement did not apply", name)
		}
		if got := fp(raw); got == want {
			t.Errorf("%s changed, fingerprint did not", name)
		}
	}
	// Without a Message-ID the reported message itself is hashed.
	noID := readSample(t, "variants/no-feedback-part.eml")
	other := bytes.Replace(noID, []byte("Promo.\n"), []byte("Promo!\n"), 1)
	if bytes.Equal(noID, other) || fp(noID) == fp(other) {
		t.Error("fingerprint ignores the reported message when it has no Message-ID")
	}
}

func TestLooksRedacted(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"", true},
		{"redacted@example.net", true},
		{"[redacted]", true},
		{"<Undisclosed Recipients>", true},
		{"xxxxxxxx@hotmail.example", true},
		{"***@isp.example", true},
		{"redacted", true},
		{"@example.com", true},
		{"user@", true},
		{"user@example.com", false},
		{"<kijitora@example.org>", false},
		{"x@example.com", false},
		{"alex@example.com", false},
	}
	for _, tt := range tests {
		if got := arf.LooksRedacted(tt.addr); got != tt.want {
			t.Errorf("LooksRedacted(%q) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}

func TestParseFeedbackID(t *testing.T) {
	tests := []struct {
		in     string
		ok     bool
		ids    []string
		sender string
	}{
		{"a:b:c:SenderId", true, []string{"a", "b", "c"}, "SenderId"},
		{" SenderOnly ", true, []string{}, "SenderOnly"},
		{"camp::type:sender", true, []string{"camp", "", "type"}, "sender"},
		{"", false, nil, ""},
	}
	for _, tt := range tests {
		got, ok := arf.ParseFeedbackID(tt.in)
		if ok != tt.ok || got.SenderID != tt.sender || len(got.Identifiers) != len(tt.ids) ||
			(len(tt.ids) > 0 && !slices.Equal(got.Identifiers, tt.ids)) {
			t.Errorf("ParseFeedbackID(%q) = %+v, %v", tt.in, got, ok)
		}
		if ok && got.Raw != strings.TrimSpace(tt.in) {
			t.Errorf("ParseFeedbackID(%q).Raw = %q", tt.in, got.Raw)
		}
	}
}

// golden is what TestGolden records of a report: everything but the raw
// reported message, plus the derived values.
type golden struct {
	Report           *arf.Report
	Recipient        string
	SenderCandidates []string
}

// TestGolden compares everything Parse extracts from each sample with
// testdata/golden; run with -update to rewrite after a deliberate change.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*", "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.Contains(f, "errors") {
			continue
		}
		name := strings.TrimSuffix(filepath.Base(filepath.Dir(f))+"_"+filepath.Base(f), ".eml") + ".json"
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			r, err := arf.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			g := golden{Recipient: r.Recipient(), SenderCandidates: r.SenderCandidates()}
			r.Reported.Raw = nil
			g.Report = r
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			if err := enc.Encode(g); err != nil {
				t.Fatal(err)
			}
			got := buf.Bytes()
			path := filepath.Join("testdata", "golden", name)
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Parse(%s) differs from %s:\n%s", f, path, got)
			}
		})
	}
}

// TestNotUTF8 feeds text that is not UTF-8 where offsets are computed on a
// lowercased copy (Received envelope-from, the human-readable text).
func TestNotUTF8(t *testing.T) {
	raw := "From: scomp@aol.net\nX-Loop: scomp\nContent-Type: multipart/mixed; boundary=b\n\n" +
		"--b\nContent-Type: text/plain\n\n\xff\xfe\xff\xfe\xff\xfe\xff\xfe received from IP 192.0.2.9\n" +
		"--b\nContent-Type: message/rfc822\n\n" +
		"Received: \xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff by mx (envelope-from <b-1@bounce.example>)\n" +
		"From: a@brand.example\nTo: redacted@isp.example\nMessage-ID: <x@brand.example>\n\nbody\n--b--\n"
	r, err := arf.Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.SenderCandidates(); !slices.Equal(got, []string{"b-1@bounce.example"}) {
		t.Errorf("SenderCandidates = %q", got)
	}
	if r.SourceIP.String() != "192.0.2.9" || r.Variant != arf.VariantAOLSComp {
		t.Errorf("SourceIP, Variant = %v, %q", r.SourceIP, r.Variant)
	}
}
