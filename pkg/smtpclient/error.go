package smtpclient

import (
	"errors"
	"strconv"
	"strings"
)

// Phase names the step of an SMTP session in which an error happened. The
// sender uses it to classify an answer (a 550 at RCPT means the mailbox, a
// 550 at greeting means the source IP) and to pick the retry policy.
type Phase string

// Phases of a session, in the order they occur.
const (
	PhaseConnect  Phase = "connect"  // TCP connect, SOCKS5 negotiation
	PhaseGreeting Phase = "greeting" // the server's 220 banner
	PhaseEHLO     Phase = "ehlo"     // EHLO, or HELO after EHLO was refused
	PhaseStartTLS Phase = "starttls" // STARTTLS command and TLS handshake (or implicit TLS)
	PhaseAuth     Phase = "auth"     // SMTP AUTH (RFC 4954)
	PhaseMail     Phase = "mail"     // MAIL FROM (and RSET before it)
	PhaseRcpt     Phase = "rcpt"     // RCPT TO
	PhaseData     Phase = "data"     // DATA command, up to its 354 reply
	PhaseDot      Phase = "dot"      // message content and the final reply
	PhaseQuit     Phase = "quit"     // RSET, NOOP or QUIT outside a transaction
)

// Sentinel errors. They are found with errors.Is inside an *Error, which
// also tells the phase.
var (
	// ErrTLSRequired: RequireTLS is set and the server does not offer
	// STARTTLS, refuses it, or the handshake fails. Temporary.
	ErrTLSRequired = errors.New("smtpclient: tls required")
	// ErrTLSUnverified: RequireVerifiedTLS is set and the server's
	// certificate does not verify for the MX name. Temporary.
	ErrTLSUnverified = errors.New("smtpclient: tls certificate not verified")
	// ErrMessageTooLarge: the server's SIZE limit (RFC 1870) is below the
	// message size; nothing was sent. Permanent.
	ErrMessageTooLarge = errors.New("smtpclient: message exceeds the server's size limit")
	// ErrSMTPUTF8Unsupported: the envelope or the message needs SMTPUTF8
	// (RFC 6531) and the server does not offer it. Permanent.
	ErrSMTPUTF8Unsupported = errors.New("smtpclient: server does not support smtputf8")
	// ErrInvalidAddress: an address holds a character that cannot appear
	// in a MAIL or RCPT path (CR, LF, '<', '>', space); sending it would
	// inject commands. Permanent.
	ErrInvalidAddress = errors.New("smtpclient: invalid address")
	// ErrNoRecipients: Send was called without recipients. Permanent.
	ErrNoRecipients = errors.New("smtpclient: no recipients")
	// ErrClosed: the connection was closed, by Close, Quit, a network
	// error, a 421 reply or a cancelled context. Temporary: dial again.
	ErrClosed = errors.New("smtpclient: connection closed")
	// ErrAuthNeedsTLS: Dialer.Auth is set and the session is not
	// encrypted; credentials are never sent in plaintext. Temporary.
	ErrAuthNeedsTLS = errors.New("smtpclient: auth needs tls")
	// ErrAuthUnsupported: the server offers no AUTH mechanism the Dialer
	// can use. Temporary (a relay's configuration, not the message).
	ErrAuthUnsupported = errors.New("smtpclient: no usable auth mechanism")
	// ErrProtocol: the server's reply could not be parsed, or had a code
	// that the command does not allow. Temporary.
	ErrProtocol = errors.New("smtpclient: protocol error")
)

// Error is the error returned by every operation of this package. It
// carries the SMTP reply when there was one (Code > 0), or the underlying
// network, TLS, context or sentinel error in Err.
type Error struct {
	// Phase is the step that failed.
	Phase Phase
	// Code is the three-digit reply code, 0 when no reply was read.
	Code int
	// EnhancedCode is the RFC 3463 status code ("5.1.1") when the reply
	// carried one (RFC 2034), else "".
	EnhancedCode string
	// Message is the reply text: every line of a multi-line reply joined
	// with "\n", without the reply code and without the enhanced code.
	Message string
	// Err is the cause when there was no reply, or a sentinel error that
	// explains a reply the client refused (for example ErrTLSRequired).
	Err error
}

// Error renders "smtpclient: <phase>: <code> <enhanced> <text>" on one line.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("smtpclient: ")
	b.WriteString(string(e.Phase))
	b.WriteString(": ")
	if e.Code > 0 {
		b.WriteString(strconv.Itoa(e.Code))
		if e.EnhancedCode != "" {
			b.WriteByte(' ')
			b.WriteString(e.EnhancedCode)
		}
		if e.Message != "" {
			b.WriteByte(' ')
			b.WriteString(strings.ReplaceAll(e.Message, "\n", " "))
		}
		if e.Err != nil {
			b.WriteString(": ")
		}
	}
	if e.Err != nil {
		b.WriteString(strings.TrimPrefix(e.Err.Error(), "smtpclient: "))
	}
	return b.String()
}

// Unwrap returns the underlying error, so errors.Is finds sentinels,
// context.DeadlineExceeded, net.Error and tls errors.
func (e *Error) Unwrap() error { return e.Err }

// Permanent reports whether retrying the same message to the same server
// will fail the same way: a 5xx reply (RFC 5321 §4.2.1), or a local check
// that depends only on the message and the server's extensions
// (ErrMessageTooLarge, ErrSMTPUTF8Unsupported, ErrInvalidAddress,
// ErrNoRecipients).
func (e *Error) Permanent() bool {
	if e.Code >= 500 && e.Code < 600 {
		return true
	}
	if e.Code == 0 {
		for _, s := range permanentSentinels {
			if errors.Is(e.Err, s) {
				return true
			}
		}
	}
	return false
}

var permanentSentinels = []error{ErrMessageTooLarge, ErrSMTPUTF8Unsupported, ErrInvalidAddress, ErrNoRecipients}

// Temporary reports whether a later attempt may succeed: a 4xx reply, a
// network error or timeout, a TLS failure or a protocol error. It is the
// negation of Permanent, so every error is exactly one of the two.
func (e *Error) Temporary() bool { return !e.Permanent() }

// MaybeDelivered reports whether the server may have accepted the
// message although Send failed: the content was being sent or its final
// "." was sent, and no reply was read (RFC 5321 §4.1.1.4 notes, RFC 1047).
// Retrying such a message may deliver it twice. Every other error from
// Send left nothing delivered, so the message can be retried at once on a
// new connection when the error is Temporary (a reused connection that
// the server had closed while idle fails this way at PhaseMail with Code 0).
func (e *Error) MaybeDelivered() bool { return e.Phase == PhaseDot && e.Code == 0 }

// Timeout reports whether the error is a timeout (a phase timeout or the
// context's deadline; context.DeadlineExceeded is a timeout too).
func (e *Error) Timeout() bool {
	var t interface{ Timeout() bool }
	return errors.As(e.Err, &t) && t.Timeout()
}
