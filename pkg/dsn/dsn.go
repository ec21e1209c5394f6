package dsn

import (
	"errors"
	"fmt"
	"net/textproto"
	"strings"

	"github.com/mailwave/mailwave/pkg/reason"
)

// Kind says what sort of message was parsed.
type Kind string

// The kinds of message.
const (
	// KindDSN is a delivery status notification, standard or not.
	KindDSN Kind = "dsn"
	// KindARF is a feedback-loop complaint (RFC 5965); package arf reads it.
	KindARF Kind = "arf"
	// KindAutoreply is an automatic reply such as a vacation notice
	// (RFC 3834); it never makes a recipient bounce.
	KindAutoreply Kind = "autoreply"
	// KindOther is any other message.
	KindOther Kind = "other"
)

// ErrUnreadable is returned by Parse when the input is not a message: it is
// empty or has no header field at all.
var ErrUnreadable = errors.New("dsn: unreadable message")

// Message is what a parsed message says about the delivery of the message
// it returns.
type Message struct {
	// Kind is what sort of message this is.
	Kind Kind
	// IsBounce reports that at least one recipient failed or was delayed.
	// It is false for positive DSNs, auto-replies, complaints and other
	// mail.
	IsBounce bool
	// ReportingMTA is the host that wrote the report (RFC 3464 §2.2.2),
	// without its "dns;" type, when known.
	ReportingMTA string
	// ArrivalDate is the raw Arrival-Date field (RFC 3464 §2.2.5), if any.
	ArrivalDate string
	// From and Subject are the bounce's own header fields, decoded.
	From, Subject string
	// Records holds one entry per reported recipient, in report order.
	// An auto-reply has one record with reason Vacation and no recipient.
	Records []Record
	// Original describes the returned message, as far as it came back.
	Original Original
}

// Record is what happened to one recipient.
type Record struct {
	// Recipient is the address that failed: the Final-Recipient
	// (RFC 3464 §2.3.2), or the address named in the prose. It is "" when
	// the report does not say.
	Recipient string
	// OriginalRecipient is the Original-Recipient (RFC 3464 §2.3.1), if any.
	OriginalRecipient string
	// Action is the RFC 3464 §2.3.3 action in lower case ("failed",
	// "delayed", "delivered", "relayed", "expanded"); for prose bounces
	// "failed" or "delayed" as the text says.
	Action string
	// Status is the RFC 3463 status code, from the Status field or the
	// diagnostic text, or "" when neither gives one.
	Status string
	// ReplyCode is the SMTP reply code found in the diagnostic, or "".
	ReplyCode string
	// RemoteMTA is the host that refused the message (RFC 3464 §2.3.5),
	// without its "dns;" type, when known.
	RemoteMTA string
	// DiagnosticType is the type of the Diagnostic-Code field ("smtp",
	// "x-unix", …) in lower case, when known.
	DiagnosticType string
	// Diagnostic is the remote server's reply or the reporting system's
	// explanation, on one line.
	Diagnostic string
	// Command is the SMTP command the error answered ("MAIL", "RCPT",
	// "DATA", "HELO", "EHLO", "CONN"), when the text says.
	Command string
	// Reason is why delivery failed, from package reason.
	Reason reason.Reason
	// Permanent reports a permanent failure (a 5.X.X status or 5xx reply).
	Permanent bool
	// Hard reports that the address should be suppressed at once.
	Hard bool
}

// Original is the header of the returned message.
type Original struct {
	// MessageID is the Message-ID without angle brackets.
	MessageID string
	// From, To and Subject are the decoded header fields.
	From, To, Subject string
	// ReturnPath is the Return-Path address without angle brackets; empty
	// when the returned header has none.
	ReturnPath string
	// Header holds every field of the returned header, including the
	// X-Mailwave-* and Feedback-ID fields the platform adds; nil when no
	// part of the message came back.
	Header textproto.MIMEHeader
}

// Parse reads one message. It never panics; it returns an error wrapping
// ErrUnreadable only when raw is not a message at all. Every record it
// returns has a valid Reason.
func Parse(raw []byte) (msg *Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			// A bug in a third-party decoder must not take a consumer down.
			msg, err = nil, fmt.Errorf("%w: %v", ErrUnreadable, r)
		}
	}()
	return parse(raw, 0)
}

// maxNesting bounds how deep parse follows a bounce forwarded inside
// another message.
const maxNesting = 2

func parse(raw []byte, nesting int) (*Message, error) {
	fs, n := readFields(raw)
	if len(fs) == 0 {
		return nil, ErrUnreadable
	}
	top := toMIMEHeader(fs)
	body := raw[n:]
	p := &parts{}
	p.walk(top, body, 0)
	if len(p.texts) == 0 && len(p.status) == 0 && len(p.html) == 0 {
		// MIME too broken to walk: read the body as text.
		p.texts = append(p.texts, decodeCharset("", body))
	}
	if len(p.texts) == 0 {
		for _, h := range p.html {
			p.texts = append(p.texts, h.text())
		}
	}
	m, inline := build(top, p)
	if nesting < maxNesting && m.Kind == KindDSN && !m.informative() {
		// A bounce that only forwards another bounce (a gateway or
		// an administrator that passes on what it received): read the
		// inner one.
		var src []byte
		switch {
		case len(p.returned) > 0:
			src = p.returned[0]
		case inline != "":
			src = []byte(inline)
			if strings.HasPrefix(inline, "From ") { // an mbox separator line
				src = src[strings.IndexByte(inline, '\n')+1:]
			}
		}
		if src != nil {
			if inner, err := parse(src, nesting+1); err == nil && inner.Kind == KindDSN && inner.informative() {
				inner.From, inner.Subject = m.From, m.Subject
				if len(inner.Records) == len(m.Records) {
					for i := range inner.Records {
						if inner.Records[i].Recipient == "" {
							inner.Records[i].Recipient = m.Records[i].Recipient
						}
					}
				}
				return inner, nil
			}
		}
	}
	return m, nil
}

// informative reports whether some record of m has a recognised reason.
func (m *Message) informative() bool {
	for _, r := range m.Records {
		if r.Reason != reason.OnHold && r.Reason != reason.Undefined {
			return true
		}
	}
	return false
}
