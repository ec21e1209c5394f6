// Package reason is Mailwave's one vocabulary for why a message was not
// delivered, and the one rule set that turns an SMTP answer into such a
// reason.
//
// The vocabulary is sisimai's (authfailure, blocked, userunknown, …), so that
// a reason means the same thing whether it was read from a live SMTP reply
// (RFC 5321 §4.2 reply code plus RFC 3463 enhanced status code, announced per
// RFC 2034), from a delivery status notification (RFC 3464 Status and
// Diagnostic-Code fields, or the free text of a non-standard bounce) or from
// a feedback-loop report (RFC 5965). The sender's response rules use
// ClassifyInput (with the SMTP command it knows) or Classify as their
// default; the bounce parser (package dsn) uses ClassifyInput with the
// extra context a DSN carries (action, diagnostic type, command, hosts).
//
// Classification is data-driven: ordered tables of lower-case phrases and of
// enhanced status codes (rules.go: primaryRules, secondaryRules, hostRules),
// read top to bottom, first match wins; ClassifyInput documents the order
// in which the tables are consulted. Hard means the address itself is dead
// (Reason.IsHard): only then should a recipient be suppressed at once.
// It is pure — no I/O, no clock — and safe for concurrent use.
package reason

import (
	"errors"
	"fmt"
	"strings"
)

// Reason is why a message was (or, for Delivered, was not) bounced. Its
// values are the lower-case words of sisimai's vocabulary.
type Reason string

// The reasons. The comments give the meaning used by the rule tables.
const (
	AuthFailure     Reason = "authfailure"     // SPF, DKIM or DMARC failed at the receiver
	BadReputation   Reason = "badreputation"   // the sending IP or domain has a poor reputation
	Blocked         Reason = "blocked"         // the sending host or IP is refused (blocklist, banned, refused connection)
	ContentError    Reason = "contenterror"    // the content or MIME structure was refused as malformed
	Delivered       Reason = "delivered"       // delivered (positive DSN, 2xx reply)
	ExceedLimit     Reason = "exceedlimit"     // a per-message limit of the receiver was exceeded (RFC 3463 X.2.3)
	Expired         Reason = "expired"         // delivery time expired: retries gave up or are still delayed
	FailedSTARTTLS  Reason = "failedstarttls"  // STARTTLS negotiation failed
	Feedback        Reason = "feedback"        // a feedback-loop complaint (ARF), not a bounce
	Filtered        Reason = "filtered"        // the recipient exists but its filter refused the message
	HasMoved        Reason = "hasmoved"        // the mailbox moved; no forwarding (RFC 3463 X.1.6)
	HostUnknown     Reason = "hostunknown"     // the recipient domain does not exist or has no route
	MailboxFull     Reason = "mailboxfull"     // the recipient's mailbox is over quota
	MailerError     Reason = "mailererror"     // the local delivery agent (program, pipe) failed
	MesgTooBig      Reason = "mesgtoobig"      // the message is larger than the receiver accepts
	NetworkError    Reason = "networkerror"    // DNS, connection or routing trouble on the way
	NoRelaying      Reason = "norelaying"      // the receiver refused to relay
	NotAccept       Reason = "notaccept"       // the destination accepts no mail at all (null MX, no MX)
	NotCompliantRFC Reason = "notcompliantrfc" // the message violates RFC 5322 (duplicate headers, missing Message-ID)
	OnHold          Reason = "onhold"          // there is an error text, but no rule recognises it
	PolicyViolation Reason = "policyviolation" // refused by a local policy of the receiver
	Rejected        Reason = "rejected"        // the envelope sender was refused
	RequirePTR      Reason = "requireptr"      // the sending IP has no (matching) reverse DNS
	SecurityError   Reason = "securityerror"   // authentication or security requirement not met
	SpamDetected    Reason = "spamdetected"    // the content was judged to be spam
	Speeding        Reason = "speeding"        // rate limited: too many messages too fast
	Suppressed      Reason = "suppressed"      // the recipient is on a suppression list of the relay
	Suspend         Reason = "suspend"         // the mailbox exists but is disabled or suspended
	SyntaxError     Reason = "syntaxerror"     // an SMTP command or address had a syntax error
	SystemError     Reason = "systemerror"     // the receiving system failed (loop, internal error)
	SystemFull      Reason = "systemfull"      // the receiving system is out of disk
	TooManyConn     Reason = "toomanyconn"     // too many connections from the sender
	Undefined       Reason = "undefined"       // nothing to go on
	UserUnknown     Reason = "userunknown"     // the recipient mailbox does not exist
	Vacation        Reason = "vacation"        // an auto-reply, not a bounce
	VirusDetected   Reason = "virusdetected"   // the content carried a virus
)

// all lists every reason in alphabetical order.
var all = []Reason{
	AuthFailure, BadReputation, Blocked, ContentError, Delivered, ExceedLimit,
	Expired, FailedSTARTTLS, Feedback, Filtered, HasMoved, HostUnknown,
	MailboxFull, MailerError, MesgTooBig, NetworkError, NoRelaying, NotAccept,
	NotCompliantRFC, OnHold, PolicyViolation, Rejected, RequirePTR,
	SecurityError, SpamDetected, Speeding, Suppressed, Suspend, SyntaxError,
	SystemError, SystemFull, TooManyConn, Undefined, UserUnknown, Vacation,
	VirusDetected,
}

// ErrUnknown is returned by Parse for a word outside the vocabulary.
var ErrUnknown = errors.New("reason: unknown reason")

// All returns every reason of the vocabulary, in alphabetical order. The
// slice is a fresh copy.
func All() []Reason {
	out := make([]Reason, len(all))
	copy(out, all)
	return out
}

// Valid reports whether r is a word of the vocabulary.
func (r Reason) Valid() bool {
	for _, x := range all {
		if x == r {
			return true
		}
	}
	return false
}

// String returns the reason word.
func (r Reason) String() string { return string(r) }

// Parse reads a reason word, ignoring case and surrounding space. It returns
// an error wrapping ErrUnknown for any other word.
func Parse(s string) (Reason, error) {
	r := Reason(strings.ToLower(strings.TrimSpace(s)))
	if !r.Valid() {
		return "", fmt.Errorf("%w: %q", ErrUnknown, s)
	}
	return r, nil
}

// IsBounce reports whether the reason describes a failed (or delayed)
// delivery, as opposed to a delivery, an auto-reply or a complaint.
func (r Reason) IsBounce() bool {
	switch r {
	case Delivered, Vacation, Feedback, "":
		return false
	}
	return true
}

// IsHard reports whether a bounce for this reason means the address itself
// is dead, so that the recipient should be suppressed at once: the mailbox
// or domain does not exist or has moved, or (when permanent) the
// destination accepts no mail at all. Every other reason is soft: it speaks
// of the sender, the content, the moment or the path, not of the address.
func (r Reason) IsHard(permanent bool) bool {
	switch r {
	case UserUnknown, HostUnknown, HasMoved:
		return true
	case NotAccept:
		return permanent
	}
	return false
}
