package response_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/reason"
	"github.com/mailwave/mailwave/pkg/response"
)

func TestShippedRules(t *testing.T) {
	rs := response.Default()
	cases := []struct {
		name   string
		a      response.Answer
		action response.Action
		retry  time.Duration
		reason reason.Reason
		hard   bool
		signal response.Signal
	}{
		{"seed 554 retried in 24h",
			response.Answer{Phase: "rcpt", Code: 554, Enhanced: "5.7.1", Text: "Service unavailable; Client host [127.0.0.3] blocked using zen.spamhaus.org", Provider: "globex"},
			response.Defer, 24 * time.Hour, reason.Blocked, false, response.SignalBlocked},
		{"seed 421 retried in 20m",
			response.Answer{Phase: "mail", Code: 421, Enhanced: "4.7.0", Text: "[TSS04] Messages from 127.0.0.3 temporarily deferred due to unexpected volume", Provider: "example"},
			response.Defer, 20 * time.Minute, "", false, response.SignalThrottled},
		{"seed 500 full retried in 24h",
			response.Answer{Phase: "rcpt", Code: 500, Text: "mailbox full", Provider: "x"},
			response.Defer, 24 * time.Hour, reason.MailboxFull, false, response.SignalNone},
		{"gmail 552 5.2.2",
			response.Answer{Phase: "rcpt", Code: 552, Enhanced: "5.2.2", Text: "The recipient's inbox is out of storage space.", Provider: "google"},
			response.Defer, 24 * time.Hour, reason.MailboxFull, false, response.SignalNone},
		{"gmail rate",
			response.Answer{Phase: "mail", Code: 421, Enhanced: "4.7.28", Text: "Gmail has detected an unusual rate of unsolicited mail", Provider: "google"},
			response.Defer, 20 * time.Minute, "", false, response.SignalThrottled},
		{"gmail user unknown is a hard bounce",
			response.Answer{Phase: "rcpt", Code: 550, Enhanced: "5.1.1", Text: "The email account that you tried to reach does not exist.", Provider: "google"},
			response.Bounce, 0, reason.UserUnknown, true, response.SignalInvalidRecipient},
		{"gmail dmarc",
			response.Answer{Phase: "dot", Code: 550, Enhanced: "5.7.26", Text: "Unauthenticated email from mailwave.test is not accepted due to domain's DMARC policy", Provider: "google"},
			response.Bounce, 0, reason.AuthFailure, false, response.SignalAuthFailure},
		{"microsoft busy",
			response.Answer{Phase: "mail", Code: 451, Enhanced: "4.7.500", Text: "Server busy. Please try again later", Provider: "microsoft"},
			response.Defer, 15 * time.Minute, reason.Speeding, false, response.SignalThrottled},
		{"yahoo TSS09",
			response.Answer{Phase: "mail", Code: 554, Enhanced: "5.7.1", Text: "[TSS09] All messages from 127.0.0.3 will be permanently deferred", Provider: "yahoo"},
			response.Defer, 24 * time.Hour, reason.Blocked, false, response.SignalBlocked},
		{"postgrey",
			response.Answer{Phase: "rcpt", Code: 450, Enhanced: "4.2.0", Text: "Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/x.html", Provider: "x"},
			response.Defer, 15 * time.Minute, "", false, response.SignalNone},
		{"unknown 4xx falls to the classifier",
			response.Answer{Phase: "rcpt", Code: 452, Enhanced: "4.2.2", Text: "Mailbox temporarily unavailable", Provider: "x"},
			response.Defer, 0, "", false, ""},
		{"250", response.Answer{Phase: "dot", Code: 250, Text: "OK"}, response.Deliver, 0, reason.Delivered, false, response.SignalNone},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := rs.Decide(c.a)
			if d.Action != c.action || d.Retry != c.retry || d.Hard != c.hard {
				t.Fatalf("decision %+v, want %s retry %s hard %v", d, c.action, c.retry, c.hard)
			}
			if c.reason != "" && d.Reason != c.reason {
				t.Errorf("reason %s, want %s (rule %s)", d.Reason, c.reason, d.Rule)
			}
			if c.signal != "" && d.Signal != c.signal {
				t.Errorf("signal %s, want %s (rule %s)", d.Signal, c.signal, d.Rule)
			}
			if d.Reason == "" || d.Rule == "" {
				t.Errorf("incomplete decision %+v", d)
			}
		})
	}
}

func TestRulesAreValidated(t *testing.T) {
	cases := map[string]string{
		"unknown field":   "rules:\n- name: a\n  when: {cod: \"554\"}\n  then: {action: defer}\n",
		"bad code":        "rules:\n- name: a\n  when: {code: \"6xx\"}\n  then: {action: defer}\n",
		"bad regexp":      "rules:\n- name: a\n  when: {text: \"(\"}\n  then: {action: defer}\n",
		"bad action":      "rules:\n- name: a\n  then: {action: retry}\n",
		"retry on bounce": "rules:\n- name: a\n  then: {action: bounce, retry: 1h}\n",
		"retry too long":  "rules:\n- name: a\n  then: {action: defer, retry: 31h}\n",
		"bad reason":      "rules:\n- name: a\n  then: {action: bounce, reason: gone}\n",
		"bad signal":      "rules:\n- name: a\n  then: {action: bounce, signal: loud}\n",
		"bad phase":       "rules:\n- name: a\n  when: {phase: [quit]}\n  then: {action: bounce}\n",
		"duplicate":       "rules:\n- name: a\n  then: {action: bounce}\n- name: a\n  then: {action: bounce}\n",
		"no name":         "rules:\n- then: {action: bounce}\n",
	}
	for name, src := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := response.Parse([]byte(src))
			if !errors.Is(err, response.ErrInvalidRules) {
				t.Fatalf("err = %v", err)
			}
			if name != "no name" && name != "unknown field" && !strings.Contains(err.Error(), `"a"`) {
				t.Errorf("error does not name the rule: %v", err)
			}
		})
	}
}

func TestFirstMatchWinsAndRuleFieldsCombine(t *testing.T) {
	rs, err := response.Parse([]byte(`rules:
- name: acme-only
  when: {provider: [acme], code: "55x", sending_domain: [shop.example]}
  then: {action: bounce, class: hard, reason: userunknown}
- name: any-55x
  when: {code: "55x"}
  then: {action: defer, retry: 2h}
`))
	if err != nil {
		t.Fatal(err)
	}
	a := response.Answer{Phase: "rcpt", Code: 550, Text: "no", Provider: "ACME", SendingDomain: "shop.example"}
	if d := rs.Decide(a); d.Rule != "acme-only" || !d.Hard || d.Action != response.Bounce {
		t.Fatalf("%+v", d)
	}
	a.SendingDomain = "other.example"
	if d := rs.Decide(a); d.Rule != "any-55x" || d.Action != response.Defer || d.Retry != 2*time.Hour {
		t.Fatalf("%+v", d)
	}
	a.Code = 421
	if d := rs.Decide(a); d.Rule != "default" || d.Action != response.Defer {
		t.Fatalf("%+v", d)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(string(response.DefaultYAML()))
	f.Add("rules: []")
	f.Fuzz(func(t *testing.T, src string) {
		rs, err := response.Parse([]byte(src))
		if err == nil {
			_ = rs.Decide(response.Answer{Phase: "rcpt", Code: 550, Enhanced: "5.1.1", Text: "x"})
		}
	})
}
