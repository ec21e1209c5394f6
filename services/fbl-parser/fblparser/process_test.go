package fblparser_test

import (
	"testing"

	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/fbl-parser/fblparser"
)

func newProcessor(pl *platform) *fblparser.Processor {
	return &fblparser.Processor{
		Signer: pl.signer, Messages: pl.messages, Suppressions: pl.supp, Pub: pl.pub, Redis: pl.rdb,
		Trust: &fblparser.Trust{Mailboxes: map[string]fblparser.SourceTrust{
			"google":   {Trusted: true, Domains: []string{"google.com"}},
			"catchall": {Trusted: false},
		}},
	}
}

func inboundIMAP(mailbox string, raw []byte) *mailwavev1.InboundMessage {
	return &mailwavev1.InboundMessage{Id: events.NewID(), Kind: mailwavev1.InboundKind_INBOUND_KIND_FBL, Raw: raw, Source: "imap:" + mailbox}
}

func TestTrustedComplaintActsOnce(t *testing.T) {
	pl := newPlatform(t)
	p := newProcessor(pl)
	ctx := testenv.Context(t)
	s := pl.send(t, "ana@gmail.com", "newsletter", "spring")
	raw := arfAbout(t, s, "feedback@google.com")

	in := inboundIMAP("google", raw)
	o, err := p.Process(ctx, in)
	if err != nil || o != fblparser.OutcomeActed {
		t.Fatalf("first copy: %v, %v; want acted", o, err)
	}
	// The same inbound message again (redelivered after a crash before its
	// ack), and a second copy of the same report (the provider sent it
	// twice, with another Message-ID of its own).
	if o, err := p.Process(ctx, in); err != nil || o != fblparser.OutcomeDuplicate {
		t.Fatalf("redelivery: %v, %v; want duplicate", o, err)
	}
	again := arfAbout(t, s, "feedback@google.com")
	if o, err := p.Process(ctx, inboundIMAP("google", again)); err != nil || o != fblparser.OutcomeDuplicate {
		t.Fatalf("second copy: %v, %v; want duplicate", o, err)
	}

	if n := pl.complaints(t); n != 1 {
		t.Errorf("%d complained events, want 1", n)
	}
	sup := pl.suppression(t, "ana@gmail.com")
	if sup == nil {
		t.Fatal("no brand suppression")
	}
	if sup.GetReason() != "complaint" || sup.GetOrigin() != mailwavev1.Origin_ORIGIN_FBL || sup.GetScope() != mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND ||
		sup.GetEvidence()["message_id"] != s.rec.GetMessageId() || sup.GetEvidence()["correlation"] != "verp" {
		t.Errorf("suppression %v", sup)
	}
	for dim, value := range map[string]string{
		fblparser.DimSourceIP: "127_0_0_3", fblparser.DimSendingDomain: "shop_example", fblparser.DimProvider: "google",
		fblparser.DimTenant: "acme", fblparser.DimCampaign: "acme.spring",
	} {
		if n := pl.counter(t, dim, value); n != 1 {
			t.Errorf("counter %s=%s is %d, want 1", dim, value, n)
		}
	}
	reports := pl.complaintReports(t)
	if len(reports) != 1 {
		t.Fatalf("%d complaint reports, want 1", len(reports))
	}
	cr := reports[0]
	c := cr.GetCorrelation()
	if !cr.GetTrusted() || cr.GetSource() != "imap:google" || cr.GetQuarantineReason() != "" || cr.GetFeedbackType() != "abuse" ||
		cr.GetSourceIp() != "127.0.0.3" || c.GetRecipient() != "ana@gmail.com" || c.GetMethod() != "verp" || !c.GetVerified() ||
		c.GetCampaignId() != "spring" || c.GetMailStream() != "newsletter" {
		t.Errorf("complaint report %v", cr)
	}
}

func TestUntrustedReportIsQuarantined(t *testing.T) {
	for _, tc := range []struct {
		name     string
		source   string
		reporter string
	}{
		{"mailbox not trusted", "imap:catchall", "feedback@google.com"},
		{"mailbox not configured", "imap:unknown", "feedback@google.com"},
		{"reporter not configured for the mailbox", "imap:google", "abuse@forger.example"},
		{"smtp without configured reporters", "smtp", "feedback@google.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pl := newPlatform(t)
			p := newProcessor(pl)
			s := pl.send(t, "ben@gmail.com", "newsletter", "spring")
			in := &mailwavev1.InboundMessage{Id: events.NewID(), Kind: mailwavev1.InboundKind_INBOUND_KIND_FBL,
				Raw: arfAbout(t, s, tc.reporter), Source: tc.source, MailFrom: tc.reporter}
			o, err := p.Process(testenv.Context(t), in)
			if err != nil || o != fblparser.OutcomeUntrusted {
				t.Fatalf("%v, %v; want untrusted", o, err)
			}
			if n := pl.complaints(t); n != 0 {
				t.Errorf("%d complained events from an untrusted source", n)
			}
			if sup := pl.suppression(t, "ben@gmail.com"); sup != nil {
				t.Errorf("suppressed by an untrusted source: %v", sup)
			}
			if n := pl.counter(t, fblparser.DimTenant, "acme"); n != 0 {
				t.Errorf("tenant counter %d, want 0", n)
			}
			reports := pl.complaintReports(t)
			if len(reports) != 1 || reports[0].GetTrusted() || reports[0].GetQuarantineReason() == "" {
				t.Fatalf("quarantine report %v", reports)
			}
			// An untrusted copy does not use up the report: the genuine
			// one that follows is acted on.
			genuine := inboundIMAP("google", arfAbout(t, s, "feedback@google.com"))
			if o, err := p.Process(testenv.Context(t), genuine); err != nil || o != fblparser.OutcomeActed {
				t.Fatalf("genuine copy after the quarantined one: %v, %v", o, err)
			}
		})
	}
}

func TestFeedbackTypes(t *testing.T) {
	for _, tc := range []struct {
		feedbackType string
		want         fblparser.Outcome
		event        mailwavev1.EventKind // 0: none
		reason       string               // suppression reason, "" for none
		counted      bool
	}{
		{"abuse", fblparser.OutcomeActed, mailwavev1.EventKind_EVENT_KIND_COMPLAINED, "complaint", true},
		{"fraud", fblparser.OutcomeActed, mailwavev1.EventKind_EVENT_KIND_COMPLAINED, "complaint", true},
		{"virus", fblparser.OutcomeActed, mailwavev1.EventKind_EVENT_KIND_COMPLAINED, "complaint", true},
		{"other", fblparser.OutcomeActed, mailwavev1.EventKind_EVENT_KIND_COMPLAINED, "complaint", true},
		{"opt-out", fblparser.OutcomeOptOut, mailwavev1.EventKind_EVENT_KIND_UNSUBSCRIBED, "unsubscribe", false},
		{"not-spam", fblparser.OutcomeIgnored, 0, "", false},
		{"auth-failure", fblparser.OutcomeIgnored, 0, "", false},
	} {
		t.Run(tc.feedbackType, func(t *testing.T) {
			pl := newPlatform(t)
			p := newProcessor(pl)
			s := pl.send(t, "cleo@gmail.com", "newsletter", "spring")
			raw := arfReport(t, reportFields{Reporter: "feedback@google.com", FeedbackType: tc.feedbackType,
				ReturnPath: s.returnPath, ShownRcpt: "cleo@gmail.com", SourceIP: "127.0.0.3", MessageID: s.rec.GetHeaderMessageId()})
			o, err := p.Process(testenv.Context(t), inboundIMAP("google", raw))
			if err != nil || o != tc.want {
				t.Fatalf("%v, %v; want %v", o, err, tc.want)
			}
			for _, k := range []mailwavev1.EventKind{mailwavev1.EventKind_EVENT_KIND_COMPLAINED, mailwavev1.EventKind_EVENT_KIND_UNSUBSCRIBED} {
				want := 0
				if k == tc.event {
					want = 1
				}
				if n := pl.countSubject(t, mailwavev1.StreamEvents, mailwavev1.SubjectEvent(k, "acme")); n != want {
					t.Errorf("%d %v events, want %d", n, k, want)
				}
			}
			sup := pl.suppression(t, "cleo@gmail.com")
			if got := sup.GetReason(); got != tc.reason {
				t.Errorf("suppression reason %q, want %q", got, tc.reason)
			}
			want := 0
			if tc.counted {
				want = 1
			}
			if n := pl.counter(t, fblparser.DimSourceIP, "127_0_0_3"); n != want {
				t.Errorf("source IP counter %d, want %d", n, want)
			}
		})
	}
}

func TestRecipientRecovery(t *testing.T) {
	pl := newPlatform(t)
	p := newProcessor(pl)
	ctx := testenv.Context(t)

	// By our Message-ID alone: the provider rewrote the return path.
	byID := pl.send(t, "dan@gmail.com", "newsletter", "spring")
	raw := arfReport(t, reportFields{Reporter: "feedback@google.com", FeedbackType: "abuse",
		ReturnPath: "someone@elsewhere.example", ShownRcpt: "redacted@gmail.com", SourceIP: "127.0.0.3",
		MessageID: byID.rec.GetHeaderMessageId()})
	if o, err := p.Process(ctx, inboundIMAP("google", raw)); err != nil || o != fblparser.OutcomeActed {
		t.Fatalf("by message-id: %v, %v", o, err)
	}
	if sup := pl.suppression(t, "dan@gmail.com"); sup == nil || sup.GetEvidence()["correlation"] != "message-id" {
		t.Errorf("by message-id: suppression %v", sup)
	}

	// A return path signed with another key is not ours: the report falls
	// back to its Feedback-ID and its own (unredacted) recipient.
	other, err := newSignerFor("another-key-that-is-not-ours")
	if err != nil {
		t.Fatal(err)
	}
	forged, err := other.Address("0123456789abcdef0123456789abcdef", "eve@gmail.com", "bounces.shop.example")
	if err != nil {
		t.Fatal(err)
	}
	raw = arfReport(t, reportFields{Reporter: "feedback@google.com", FeedbackType: "abuse",
		ReturnPath: forged, ShownRcpt: "eve@gmail.com", SourceIP: "192.0.2.9",
		MessageID: "foreign-1@mailer.example", FeedbackID: "none:newsletter:shop:acme"})
	if o, err := p.Process(ctx, inboundIMAP("google", raw)); err != nil || o != fblparser.OutcomeActed {
		t.Fatalf("by feedback-id: %v, %v", o, err)
	}
	sup := pl.suppression(t, "eve@gmail.com")
	if sup == nil || sup.GetEvidence()["correlation"] != "feedback-id" || sup.GetEvidence()["campaign_id"] != "" {
		t.Errorf("by feedback-id: suppression %v", sup)
	}
	if n := pl.counter(t, fblparser.DimSourceIP, "192_0_2_9"); n != 1 {
		t.Errorf("source IP counter of the report %d, want 1", n)
	}

	// Nothing of ours and the recipient redacted: counted nowhere but
	// reported, and no one is suppressed.
	raw = arfReport(t, reportFields{Reporter: "feedback@google.com", FeedbackType: "abuse",
		ReturnPath: "x@elsewhere.example", ShownRcpt: "redacted@gmail.com", SourceIP: "192.0.2.10",
		MessageID: "foreign-2@mailer.example"})
	if o, err := p.Process(ctx, inboundIMAP("google", raw)); err != nil || o != fblparser.OutcomeActed {
		t.Fatalf("uncorrelated: %v, %v", o, err)
	}
	if n := pl.complaints(t); n != 2 {
		t.Errorf("%d complained events, want 2 (the uncorrelated report has no tenant)", n)
	}
}

func TestUnparseableReport(t *testing.T) {
	pl := newPlatform(t)
	p := newProcessor(pl)
	o, err := p.Process(testenv.Context(t), inboundIMAP("google", readTestdata(t, "not-a-report.eml")))
	if err != nil || o != fblparser.OutcomeUnparseable {
		t.Fatalf("%v, %v; want unparseable", o, err)
	}
	if n := len(pl.complaintReports(t)); n != 0 {
		t.Errorf("%d reports published for a message that is not a report", n)
	}
}
