// Package response decides what an SMTP answer means for a message: deliver,
// defer with an interval, or bounce (hard or soft), with a reason word from
// the platform's one vocabulary (package reason) and a signal for the
// reputation monitor (throttled, blocked, auth failure, …).
//
// Rules are data: an ordered YAML list, first match wins, matched on the
// SMTP phase, the reply code (RFC 5321 §4.2), the enhanced status code
// (RFC 3463), the reply text (a regular expression), the provider, and the
// sending and recipient domains. An answer no rule matches is decided by
// package reason's classifier: a 5xx bounces (hard when the address is
// dead), a 4xx defers. The shipped rules (default.yaml) encode the seeds'
// scenarios and the well-known answers of Gmail, Yahoo and Microsoft.
package response

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mailwave/mailwave/pkg/reason"
)

// Errors.
var (
	// ErrInvalidRules wraps every problem found while loading rules; the
	// message names the rule and the field.
	ErrInvalidRules = errors.New("response: invalid rules")
)

// Action is what happens to the message.
type Action string

// Actions.
const (
	Deliver Action = "deliver"
	Defer   Action = "defer"
	Bounce  Action = "bounce"
)

// Signal is what an answer tells the reputation monitor.
type Signal string

// Signals.
const (
	SignalNone             Signal = "none"
	SignalThrottled        Signal = "throttled"
	SignalBlocked          Signal = "blocked"
	SignalAuthFailure      Signal = "auth_failure"
	SignalContent          Signal = "content"
	SignalInvalidRecipient Signal = "invalid_recipient"
	SignalRemoteFailure    Signal = "remote_failure"
)

// Answer is one SMTP answer in context.
type Answer struct {
	// Phase is the step it came in: connect, greeting, ehlo, starttls,
	// auth (at a relay's smarthost), mail, rcpt, data, dot.
	Phase           string
	Code            int
	Enhanced        string
	Text            string
	Provider        string
	SendingDomain   string
	RecipientDomain string
}

// Decision is what the rules decided.
type Decision struct {
	Action Action
	// Retry is the interval before the next attempt for Defer; 0 leaves
	// it to the sender's backoff.
	Retry  time.Duration
	Hard   bool
	Reason reason.Reason
	Signal Signal
	// Rule names the rule that matched, "default" when none did.
	Rule string
}

// Rules is a validated, ordered rule set.
type Rules struct {
	rules []rule
}

type rule struct {
	name                    string
	phases                  map[string]bool
	code                    codeMatch
	enhanced                string
	text                    *regexp.Regexp
	provider, sending, rcpt map[string]bool
	action                  Action
	retry                   time.Duration
	hard                    *bool
	reason                  reason.Reason
	signal                  Signal
}

type codeMatch struct{ pattern string } // "554", "55x", "5xx", "" any

func (c codeMatch) match(code int) bool {
	if c.pattern == "" {
		return true
	}
	s := strconv.Itoa(code)
	if len(s) != 3 {
		return false
	}
	for i := range 3 {
		if c.pattern[i] != 'x' && c.pattern[i] != s[i] {
			return false
		}
	}
	return true
}

// file is the YAML form.
type file struct {
	Rules []struct {
		Name string `yaml:"name"`
		When struct {
			Phase           []string `yaml:"phase"`
			Code            string   `yaml:"code"`
			Enhanced        string   `yaml:"enhanced"`
			Text            string   `yaml:"text"`
			Provider        []string `yaml:"provider"`
			SendingDomain   []string `yaml:"sending_domain"`
			RecipientDomain []string `yaml:"recipient_domain"`
		} `yaml:"when"`
		Then struct {
			Action string `yaml:"action"`
			Retry  string `yaml:"retry"`
			Class  string `yaml:"class"`
			Reason string `yaml:"reason"`
			Signal string `yaml:"signal"`
		} `yaml:"then"`
	} `yaml:"rules"`
}

//go:embed default.yaml
var defaultYAML []byte

// Default returns the shipped rules.
func Default() *Rules {
	r, err := Parse(defaultYAML)
	if err != nil {
		panic("response: shipped rules are invalid: " + err.Error())
	}
	return r
}

// DefaultYAML returns the shipped rules' source.
func DefaultYAML() []byte { return bytes.Clone(defaultYAML) }

// Load reads rules from a YAML file. Errors wrap ErrInvalidRules.
func Load(path string) (*Rules, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRules, err)
	}
	r, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

var validPhases = map[string]bool{"connect": true, "greeting": true, "ehlo": true, "starttls": true,
	"auth": true, "mail": true, "rcpt": true, "data": true, "dot": true}

var validSignals = map[Signal]bool{SignalNone: true, SignalThrottled: true, SignalBlocked: true,
	SignalAuthFailure: true, SignalContent: true, SignalInvalidRecipient: true, SignalRemoteFailure: true}

// Parse reads and validates rules; unknown fields, bad patterns, unknown
// reasons and out-of-range intervals are errors naming the rule. Errors
// wrap ErrInvalidRules.
func Parse(b []byte) (*Rules, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRules, err)
	}
	out := &Rules{}
	names := map[string]bool{}
	for i, fr := range f.Rules {
		name := fr.Name
		if name == "" {
			return nil, fmt.Errorf("%w: rule %d: name is required", ErrInvalidRules, i+1)
		}
		if names[name] {
			return nil, fmt.Errorf("%w: rule %q: duplicate name", ErrInvalidRules, name)
		}
		names[name] = true
		bad := func(field, format string, args ...any) error {
			return fmt.Errorf("%w: rule %q: %s: %s", ErrInvalidRules, name, field, fmt.Sprintf(format, args...))
		}
		r := rule{name: name}
		if len(fr.When.Phase) > 0 {
			r.phases = map[string]bool{}
			for _, p := range fr.When.Phase {
				if !validPhases[p] {
					return nil, bad("when.phase", "unknown phase %q", p)
				}
				r.phases[p] = true
			}
		}
		if c := strings.ToLower(fr.When.Code); c != "" {
			if len(c) != 3 || (c[0] != '2' && c[0] != '4' && c[0] != '5') ||
				strings.Trim(c[1:], "0123456789x") != "" {
				return nil, bad("when.code", "%q is not a reply code or class like 554, 55x, 4xx", fr.When.Code)
			}
			r.code = codeMatch{pattern: c}
		}
		if e := fr.When.Enhanced; e != "" {
			if !regexp.MustCompile(`^[245](\.\d{1,3}){0,2}\.?$`).MatchString(e) {
				return nil, bad("when.enhanced", "%q is not an enhanced status code or prefix like 5.7. or 5.1.1", e)
			}
			r.enhanced = e
		}
		if t := fr.When.Text; t != "" {
			re, err := regexp.Compile(t)
			if err != nil {
				return nil, bad("when.text", "%v", err)
			}
			r.text = re
		}
		r.provider = set(fr.When.Provider)
		r.sending = set(fr.When.SendingDomain)
		r.rcpt = set(fr.When.RecipientDomain)
		switch a := Action(fr.Then.Action); a {
		case Deliver, Defer, Bounce:
			r.action = a
		default:
			return nil, bad("then.action", "%q is not deliver, defer or bounce", fr.Then.Action)
		}
		if fr.Then.Retry != "" {
			if r.action != Defer {
				return nil, bad("then.retry", "only a defer has a retry interval")
			}
			d, err := time.ParseDuration(fr.Then.Retry)
			if err != nil || d < time.Minute || d > 30*time.Hour {
				return nil, bad("then.retry", "%q must be a duration from 1m to 30h", fr.Then.Retry)
			}
			r.retry = d
		}
		switch fr.Then.Class {
		case "":
		case "hard", "soft":
			if r.action != Bounce {
				return nil, bad("then.class", "only a bounce is hard or soft")
			}
			h := fr.Then.Class == "hard"
			r.hard = &h
		default:
			return nil, bad("then.class", "%q is not hard or soft", fr.Then.Class)
		}
		if fr.Then.Reason != "" {
			rs, err := reason.Parse(fr.Then.Reason)
			if err != nil {
				return nil, bad("then.reason", "%v", err)
			}
			r.reason = rs
		}
		if fr.Then.Signal != "" {
			if !validSignals[Signal(fr.Then.Signal)] {
				return nil, bad("then.signal", "unknown signal %q", fr.Then.Signal)
			}
			r.signal = Signal(fr.Then.Signal)
		}
		out.rules = append(out.rules, r)
	}
	return out, nil
}

func set(xs []string) map[string]bool {
	if len(xs) == 0 {
		return nil
	}
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[strings.ToLower(x)] = true
	}
	return m
}

func (r *rule) match(a Answer) bool {
	if r.phases != nil && !r.phases[a.Phase] {
		return false
	}
	if !r.code.match(a.Code) {
		return false
	}
	if r.enhanced != "" && !(a.Enhanced == r.enhanced || strings.HasPrefix(a.Enhanced, strings.TrimSuffix(r.enhanced, ".")+".")) {
		return false
	}
	if r.provider != nil && !r.provider[strings.ToLower(a.Provider)] {
		return false
	}
	if r.sending != nil && !r.sending[strings.ToLower(a.SendingDomain)] {
		return false
	}
	if r.rcpt != nil && !r.rcpt[strings.ToLower(a.RecipientDomain)] {
		return false
	}
	if r.text != nil && !r.text.MatchString(a.Text) {
		return false
	}
	return true
}

// commands maps a phase to the SMTP command reason.ClassifyInput expects.
var commands = map[string]string{"greeting": "CONN", "connect": "CONN", "ehlo": "EHLO", "mail": "MAIL",
	"rcpt": "RCPT", "data": "DATA", "dot": "DATA"}

// Decide returns the decision for an answer: the first matching rule,
// completed by the classifier for what the rule leaves open, or the
// classifier alone.
func (rs *Rules) Decide(a Answer) Decision {
	if a.Code >= 200 && a.Code < 300 {
		return Decision{Action: Deliver, Reason: reason.Delivered, Signal: SignalNone, Rule: "2xx"}
	}
	v := reason.ClassifyInput(reason.Input{ReplyCode: a.Code, Status: a.Enhanced, Text: a.Text, Command: commands[a.Phase]})
	d := Decision{Reason: v.Reason, Rule: "default", Signal: signalOf(v.Reason)}
	permanent := a.Code >= 500 || (a.Code == 0 && v.Permanent)
	if permanent {
		d.Action, d.Hard = Bounce, v.Hard
	} else {
		d.Action = Defer
	}
	for i := range rs.rules {
		r := &rs.rules[i]
		if !r.match(a) {
			continue
		}
		d.Rule, d.Action, d.Retry = r.name, r.action, r.retry
		if r.reason != "" {
			d.Reason = r.reason
			d.Signal = signalOf(r.reason)
		}
		if r.signal != "" {
			d.Signal = r.signal
		}
		switch {
		case d.Action != Bounce:
			d.Hard = false
		case r.hard != nil:
			d.Hard = *r.hard
		default:
			d.Hard = d.Reason.IsHard(true)
		}
		break
	}
	return d
}

// signalOf is the signal a reason sends when no rule names one.
func signalOf(r reason.Reason) Signal {
	switch r {
	case reason.Speeding, reason.TooManyConn:
		return SignalThrottled
	case reason.Blocked, reason.BadReputation, reason.RequirePTR, reason.NoRelaying:
		return SignalBlocked
	case reason.AuthFailure, reason.SecurityError:
		return SignalAuthFailure
	case reason.SpamDetected, reason.VirusDetected, reason.ContentError, reason.PolicyViolation:
		return SignalContent
	case reason.UserUnknown, reason.HostUnknown, reason.HasMoved:
		return SignalInvalidRecipient
	case reason.SystemError, reason.SystemFull, reason.NetworkError, reason.MailerError:
		return SignalRemoteFailure
	}
	return SignalNone
}
