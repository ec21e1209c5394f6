package dsn_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailwave/mailwave/pkg/dsn"
	"github.com/mailwave/mailwave/pkg/reason"
)

// corpusLabel is one line of testdata/corpus/labels.jsonl.
type corpusLabel struct {
	File                string `json:"file"`
	IsBounce            bool   `json:"is_bounce"`
	RecipientConfidence string `json:"recipient_confidence"`
	Records             []struct {
		Recipient  *string `json:"recipient"`
		Reason     string  `json:"reason"`
		HardBounce bool    `json:"hardbounce"`
	} `json:"records"`
}

func readLabels(t testing.TB) []corpusLabel {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "corpus", "labels.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []corpusLabel
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l corpusLabel
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCorpusLabels checks the parser against sisimai's reading of real
// bounces from some sixty mail systems.
func TestCorpusLabels(t *testing.T) {
	labels := readLabels(t)
	if len(labels) < 50 {
		t.Fatalf("only %d labelled samples", len(labels))
	}
	for _, l := range labels {
		t.Run(l.File, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", "corpus", l.File))
			if err != nil {
				t.Fatal(err)
			}
			m, err := dsn.Parse(raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if m.IsBounce != l.IsBounce {
				t.Fatalf("IsBounce = %v (kind %s), want %v", m.IsBounce, m.Kind, l.IsBounce)
			}
			if !l.IsBounce {
				return
			}
			if m.Kind != dsn.KindDSN {
				t.Errorf("Kind = %s, want dsn", m.Kind)
			}
			if len(m.Records) != len(l.Records) {
				t.Fatalf("%d records, want %d: %+v", len(m.Records), len(l.Records), m.Records)
			}
			for i, want := range l.Records {
				got := m.Records[i]
				if string(got.Reason) != want.Reason || got.Hard != want.HardBounce {
					t.Errorf("record %d: %s hard=%v, want %s hard=%v (status %q, diagnostic %q)",
						i, got.Reason, got.Hard, want.Reason, want.HardBounce, got.Status, got.Diagnostic)
				}
				if want.Recipient != nil && l.RecipientConfidence == "high" && !strings.EqualFold(got.Recipient, *want.Recipient) {
					t.Errorf("record %d: recipient %q, want %q", i, got.Recipient, *want.Recipient)
				}
			}
		})
	}
}

func TestOriginalAndFields(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "mailwave-dsn.eml"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := dsn.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if m.Kind != dsn.KindDSN || !m.IsBounce || m.ReportingMTA != "mx.receiver.test" {
		t.Errorf("kind %s bounce %v reporting %q", m.Kind, m.IsBounce, m.ReportingMTA)
	}
	o := m.Original
	if o.MessageID != "m42.t1@brand.test" || o.ReturnPath != "bounce+t1.c42.Zm9v@bounce.brand.test" ||
		o.From != "Brand News <news@brand.test>" || o.Subject != "Café offers" {
		t.Errorf("original %+v", o)
	}
	if o.Header.Get("X-Mailwave-Message") != "m42" || o.Header.Get("X-Mailwave-Tenant") != "t1" ||
		o.Header.Get("Feedback-Id") != "c42:t1:bulk:mailwave" {
		t.Errorf("correlation headers %v", o.Header)
	}
	want := []dsn.Record{
		{Recipient: "ann@receiver.test", OriginalRecipient: "Ann@Receiver.test", Action: "failed", Status: "5.1.1",
			ReplyCode: "550", RemoteMTA: "mx2.receiver.test", DiagnosticType: "smtp", Command: "RCPT",
			Reason: reason.UserUnknown, Permanent: true, Hard: true},
		{Recipient: "bob@receiver.test", Action: "delayed", Status: "4.2.2", ReplyCode: "452",
			RemoteMTA: "mx2.receiver.test", DiagnosticType: "smtp", Command: "RCPT", Reason: reason.MailboxFull},
	}
	if len(m.Records) != len(want) {
		t.Fatalf("records %+v", m.Records)
	}
	for i, w := range want {
		g := m.Records[i]
		w.Diagnostic = g.Diagnostic
		if g != w {
			t.Errorf("record %d:\n got %+v\nwant %+v", i, g, w)
		}
		if !strings.Contains(g.Diagnostic, string(w.ReplyCode)) {
			t.Errorf("record %d diagnostic %q", i, g.Diagnostic)
		}
	}
}

func TestKinds(t *testing.T) {
	for _, tc := range []struct {
		name     string
		raw      string
		kind     dsn.Kind
		isBounce bool
	}{
		{"arf", "From: fbl@isp.test\r\nContent-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n--b--\r\n",
			dsn.KindARF, false},
		{"vacation subject", "From: ann@receiver.test\r\nSubject: Out of Office: offers\r\n\r\nI am away until Monday.\r\n",
			dsn.KindAutoreply, false},
		{"auto-submitted", "From: ann@receiver.test\r\nAuto-Submitted: auto-replied\r\nSubject: Re: offers\r\n\r\nThanks, we will answer soon.\r\n",
			dsn.KindAutoreply, false},
		{"x-autoreply", "From: ann@receiver.test\r\nX-Autoreply: yes\r\nSubject: Re: offers\r\n\r\nThanks.\r\n",
			dsn.KindAutoreply, false},
		{"precedence", "From: ann@receiver.test\r\nPrecedence: auto_reply\r\nSubject: Re: offers\r\n\r\nThanks.\r\n",
			dsn.KindAutoreply, false},
		{"a reply", "From: ann@receiver.test\r\nSubject: Re: offers\r\n\r\nPlease call me.\r\n",
			dsn.KindOther, false},
		{"prose bounce", "From: MAILER-DAEMON@mx.test\r\nSubject: failure notice\r\n\r\nHi. This is the qmail-send program at mx.test.\r\n\r\n<gone@receiver.test>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n",
			dsn.KindDSN, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := dsn.Parse([]byte(tc.raw))
			if err != nil {
				t.Fatal(err)
			}
			if m.Kind != tc.kind || m.IsBounce != tc.isBounce {
				t.Errorf("kind %s bounce %v, want %s %v", m.Kind, m.IsBounce, tc.kind, tc.isBounce)
			}
			if tc.kind == dsn.KindAutoreply && (len(m.Records) != 1 || m.Records[0].Reason != reason.Vacation) {
				t.Errorf("autoreply records %+v", m.Records)
			}
			if tc.kind == dsn.KindDSN && (len(m.Records) != 1 || m.Records[0].Recipient != "gone@receiver.test" ||
				m.Records[0].Reason != reason.UserUnknown || !m.Records[0].Hard) {
				t.Errorf("prose records %+v", m.Records)
			}
		})
	}
}

func TestUnreadable(t *testing.T) {
	for _, raw := range []string{"", "\r\n\r\nno header at all", "just one line without a colon"} {
		if _, err := dsn.Parse([]byte(raw)); !errors.Is(err, dsn.ErrUnreadable) {
			t.Errorf("Parse(%q) error %v, want ErrUnreadable", raw, err)
		}
	}
}

// A Sendmail summary lists one reply per line: each recipient's diagnostic
// is its own reply, not the ones written below it (RFC 5321 §4.2.1: only
// a hyphen after the code continues a reply).
func TestReplyEndsAtTheNextReply(t *testing.T) {
	raw := "From: Mail Delivery Subsystem <MAILER-DAEMON@mx.sender.test>\r\n" +
		"Subject: Returned mail: see transcript for details\r\n\r\n" +
		"554 <ann@receiver.test>... Remote protocol error: Connection reset by peer during result wait\r\n" +
		"550 other.test (smtp)... 550 Host unknown\r\n" +
		"554 <bob@other.test>... 550 Host unknown (Authoritative answer from name server)\r\n"
	m, err := dsn.Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Records) != 2 {
		t.Fatalf("records %+v", m.Records)
	}
	ann, bob := m.Records[0], m.Records[1]
	if ann.Recipient != "ann@receiver.test" || strings.Contains(ann.Diagnostic, "Host unknown") || ann.Reason == reason.HostUnknown || ann.Hard {
		t.Errorf("ann: %+v", ann)
	}
	if bob.Recipient != "bob@other.test" || bob.Reason != reason.HostUnknown || !bob.Hard {
		t.Errorf("bob: %+v", bob)
	}
}
