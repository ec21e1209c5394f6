package reason_test

import (
	"errors"
	"testing"

	"github.com/mailwave/mailwave/pkg/reason"
)

// Live SMTP replies as the big mailbox providers write them, and what the
// sender must make of them.
func TestClassifyLiveReplies(t *testing.T) {
	for _, tc := range []struct {
		name      string
		code      int
		enhanced  string
		text      string
		want      reason.Reason
		hard      bool
		permanent bool
	}{
		{"gmail no such user", 550, "5.1.1",
			"The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser",
			reason.UserUnknown, true, true},
		{"gmail over quota", 552, "5.2.2",
			"The email account that you tried to reach is over quota. Please direct the recipient to https://support.google.com/mail/?p=OverQuotaPerm",
			reason.MailboxFull, false, true},
		{"gmail over quota, temporary", 452, "4.2.2",
			"The email account that you tried to reach is over quota and inactive.",
			reason.MailboxFull, false, false},
		{"gmail rate limited", 421, "4.7.28",
			"Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited.",
			reason.Speeding, false, false},
		{"gmail unauthenticated", 550, "5.7.26",
			"This mail is unauthenticated, which poses a security risk to the sender and Gmail users, and has been blocked. The sender must authenticate with at least one of SPF or DKIM.",
			reason.AuthFailure, false, true},
		{"gmail dmarc", 550, "5.7.26",
			"Unauthenticated email from example.com is not accepted due to domain's DMARC policy. Please contact the administrator of example.com domain.",
			reason.AuthFailure, false, true},
		{"gmail likely spam", 550, "5.7.1",
			"Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been blocked.",
			reason.SpamDetected, false, true},
		{"gmail low reputation", 550, "5.7.1",
			"Our system has detected that this message is likely suspicious due to the very low reputation of the sending IP address.",
			reason.BadReputation, false, true},
		{"gmail missing message-id", 550, "5.7.1",
			"Messages missing a valid messageId header are not accepted.",
			reason.NotCompliantRFC, false, true},
		{"spamhaus blocklist", 554, "5.7.1",
			"Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.1",
			reason.Blocked, false, true},
		{"yahoo TSS04", 421, "4.7.0",
			"[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
			reason.BadReputation, false, false},
		{"yahoo policy", 554, "5.7.9",
			"Message not accepted for policy reasons. See https://senders.yahooinc.com/error-codes",
			reason.PolicyViolation, false, true},
		{"microsoft server busy", 451, "4.7.500",
			"Server busy. Please try again later from [192.0.2.1]. (S77714) [DB5EUR03FT012.eop-EUR03.prod.protection.outlook.com]",
			reason.Speeding, false, false},
		{"microsoft banned ip", 550, "5.7.606",
			"Access denied, banned sending IP [192.0.2.1]. To request removal from this list please visit https://sender.office.com/ and follow the directions.",
			reason.Blocked, false, true},
		{"microsoft recipient not found", 550, "5.1.10",
			"RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
			reason.UserUnknown, true, true},
		{"microsoft dmarc", 550, "5.7.509",
			"Access denied, sending domain example.com does not pass DMARC verification and has a DMARC policy of reject.",
			reason.AuthFailure, false, true},
		{"postfix relay denied", 554, "5.7.1",
			"<x@example.org>: Relay access denied",
			reason.NoRelaying, false, true},
		{"postfix no ptr", 450, "4.7.1",
			"Client host rejected: cannot find your hostname, [192.0.2.1]",
			reason.RequirePTR, false, false},
		{"message too big", 552, "5.3.4",
			"Message size exceeds fixed maximum message size",
			reason.MesgTooBig, false, true},
		{"mailbox disabled", 550, "5.2.1",
			"The email account that you tried to reach is disabled.",
			reason.Suspend, false, true},
		{"moved", 550, "5.1.6",
			"recipient no longer on server",
			reason.HasMoved, true, true},
		{"domain does not exist", 550, "5.1.2",
			"Domain does not exist",
			reason.HostUnknown, true, true},
		{"null mx", 556, "5.1.10",
			"Recipient address has null MX",
			reason.NotAccept, true, true},
		{"too many connections", 421, "4.7.0",
			"Too many concurrent SMTP connections from this IP address; please try again later.",
			reason.TooManyConn, false, false},
		{"virus", 554, "5.7.1",
			"Message rejected: virus found (Eicar-Test-Signature)",
			reason.VirusDetected, false, true},
		{"accepted", 250, "2.0.0", "OK 1700000000 a1-20020a05", reason.Delivered, false, false},
		{"unknown text", 550, "", "Nyaan", reason.OnHold, false, true},
		{"nothing", 0, "", "", reason.Undefined, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := reason.Classify(tc.code, tc.enhanced, tc.text)
			if v.Reason != tc.want || v.Hard != tc.hard || v.Permanent != tc.permanent {
				t.Errorf("Classify(%d, %q, …) = %s hard=%v permanent=%v, want %s hard=%v permanent=%v",
					tc.code, tc.enhanced, v.Reason, v.Hard, v.Permanent, tc.want, tc.hard, tc.permanent)
			}
			if !v.Reason.Valid() {
				t.Errorf("reason %q is not in the vocabulary", v.Reason)
			}
		})
	}
}

// The command a reply answered decides what "no such user" means.
func TestClassifyInputCommand(t *testing.T) {
	const text = "550 Requested action not taken: mailbox unavailable"
	for _, tc := range []struct {
		cmd  string
		want reason.Reason
	}{
		{"RCPT", reason.UserUnknown},
		{"MAIL", reason.Rejected},
		{"DATA", reason.Filtered},
		{"", reason.Filtered},
	} {
		v := reason.ClassifyInput(reason.Input{ReplyCode: 550, Text: text, Command: tc.cmd})
		if v.Reason != tc.want {
			t.Errorf("command %q: %s, want %s", tc.cmd, v.Reason, tc.want)
		}
	}
}

func TestClassifyInputDSNContext(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   reason.Input
		want reason.Reason
	}{
		{"local delivery agent", reason.Input{Status: "5.1.1", DiagnosticType: "x-unix", Text: "procmail: Couldn't create /var/mail/x"}, reason.MailerError},
		{"delayed", reason.Input{Status: "4.4.7", Action: "delayed"}, reason.Expired},
		{"delayed by timeouts", reason.Input{Status: "4.4.1", Action: "delayed", Text: "connection timed out"}, reason.NetworkError},
		{"gave up after timeouts", reason.Input{Status: "4.4.1", Action: "failed", Text: "connect to mx.example.org[192.0.2.1]:25: Connection timed out"}, reason.Expired},
		{"temporary dns", reason.Input{Status: "4.0.0", Action: "failed", Text: "DNS Error: DNS type 'mx' lookup of example.org responded with code NXDOMAIN Domain name not found"}, reason.NetworkError},
		{"delivered action", reason.Input{Action: "delivered", Status: "2.1.5", Text: "250 2.1.5 Ok"}, reason.Delivered},
		{"status only", reason.Input{Status: "5.2.2"}, reason.MailboxFull},
		{"status in text", reason.Input{Text: "smtp; 550 5.1.1 <x@example.org>... User Unknown"}, reason.UserUnknown},
		{"multi-line reply", reason.Input{Text: "550-5.7.1 Messages with multiple 550-5.7.1 addresses in From: header are not accepted."}, reason.NotCompliantRFC},
		// Without the command, a status or a statement, "user unknown"
		// may be a filter's misleading answer.
		{"unknown user, nothing else known", reason.Input{Status: "5.0.0", Text: "The email account that you tried to reach does not exist."}, reason.Filtered},
		{"unknown user, statement", reason.Input{Status: "5.0.0", Text: "Your message wasn't delivered to x@example.org because the address couldn't be found."}, reason.UserUnknown},
		{"unknown user, statement in the report", reason.Input{Status: "5.0.0", Text: "550 <x@example.org>: User unknown",
			Context: "Your message wasn't delivered because the address couldn't be found."}, reason.UserUnknown},
		{"microsoft next hop unknown", reason.Input{Status: "5.1.351", Text: "550 5.1.351 Remote server returned unknown recipient or mailbox unavailable -> 550 Unknown user"}, reason.UserUnknown},
		{"account disabled, said by the report", reason.Input{Status: "5.0.0", Text: "550 user unknown (in reply to RCPT TO command)", Command: "RCPT",
			Context: "The user(s) account is disabled."}, reason.Suspend},
		{"local delivery agent behind a generic reply", reason.Input{Status: "5.5.0", Text: "554 <x@example.net>... Service unavailable",
			Context: "mail.local: unknown user: x\n554 <x@example.net>... Service unavailable"}, reason.UserUnknown},
		{"generic refusal of MAIL FROM", reason.Input{Status: "5.7.1", Text: "550 5.7.1 Access denied", Command: "MAIL"}, reason.Rejected},
		{"block at MAIL FROM", reason.Input{Status: "5.7.1", Text: "550 5.7.1 Client host [192.0.2.1] blocked using zen.spamhaus.org", Command: "MAIL"}, reason.Blocked},
		// Yahoo answers RCPT TO for an address that does not exist
		// without an enhanced status code.
		{"yahoo no account", reason.Input{ReplyCode: 554, Command: "RCPT",
			Text: "delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0] - mta1001.mail.gq1.yahoo.com"}, reason.UserUnknown},
		// Providers' own wording (hostRules).
		{"yahoo, no status", reason.Input{ReplyCode: 554, Text: "delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0]",
			Hosts: []string{"mta6.am0.yahoodns.net"}}, reason.UserUnknown},
		{"same words elsewhere", reason.Input{ReplyCode: 554, Text: "This user doesn't have a example.com account (x@example.com) [0]",
			Hosts: []string{"mx.example.com"}}, reason.Filtered},
		{"au unknown address", reason.Input{Status: "5.0.0", Text: "550 <x@ezweb.ne.jp>: User unknown", Hosts: []string{"lsean.ezweb.ne.jp"}}, reason.UserUnknown},
		{"au reception filter", reason.Input{Status: "5.0.0", Text: "550 : User unknown", Hosts: []string{"msmx.au.com"}}, reason.Filtered},
		{"messagelabs 542", reason.Input{Status: "5.0.0", Text: "542 x@example.com Rejected", Hosts: []string{"server-1.bemta-2.messagelabs.com"}}, reason.UserUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if v := reason.ClassifyInput(tc.in); v.Reason != tc.want {
				t.Errorf("ClassifyInput(%+v) = %s, want %s", tc.in, v.Reason, tc.want)
			}
		})
	}
}

func TestParseValid(t *testing.T) {
	all := reason.All()
	if len(all) != 36 {
		t.Fatalf("All() has %d reasons, want 36", len(all))
	}
	for _, r := range all {
		got, err := reason.Parse(" " + string(r) + " ")
		if err != nil || got != r || !r.Valid() {
			t.Errorf("Parse(%q) = %q, %v", r, got, err)
		}
	}
	if got, err := reason.Parse("UserUnknown"); err != nil || got != reason.UserUnknown {
		t.Errorf("Parse is case-sensitive: %q, %v", got, err)
	}
	if _, err := reason.Parse("nosuchreason"); !errors.Is(err, reason.ErrUnknown) {
		t.Errorf("Parse(nosuchreason) error %v, want ErrUnknown", err)
	}
	if reason.Reason("bogus").Valid() {
		t.Error("bogus is valid")
	}
	all[0] = "changed"
	if reason.All()[0] == "changed" {
		t.Error("All returns the package's own slice")
	}
}

func TestHardAndBounce(t *testing.T) {
	for _, r := range reason.All() {
		hard := r == reason.UserUnknown || r == reason.HostUnknown || r == reason.HasMoved || r == reason.NotAccept
		if r.IsHard(true) != hard {
			t.Errorf("%s.IsHard(true) = %v", r, r.IsHard(true))
		}
		bounce := r != reason.Delivered && r != reason.Vacation && r != reason.Feedback
		if r.IsBounce() != bounce {
			t.Errorf("%s.IsBounce() = %v", r, r.IsBounce())
		}
	}
	if reason.NotAccept.IsHard(false) {
		t.Error("a temporary notaccept is hard")
	}
}

func TestFindStatus(t *testing.T) {
	for in, want := range map[string]string{
		"550 5.1.1 <a@b.example>: user unknown": "5.1.1",
		"#5.4.4 no route":                       "5.4.4",
		"host 192.0.2.1 said 550":               "",
		"version 4.2.1.5 of it":                 "",
		"(#4.4.1)":                              "4.4.1",
		"550 5.1.351 remote":                    "5.1.351",
	} {
		if got := reason.FindStatus(in); got != want {
			t.Errorf("FindStatus(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"5.1.1": "5.1.1", " 4.2.2 (x)": "4.2.2", "5.1": "", "6.1.1": "", "5.1.1.1": ""} {
		if got := reason.NormaliseStatus(in); got != want {
			t.Errorf("NormaliseStatus(%q) = %q, want %q", in, got, want)
		}
	}
}
