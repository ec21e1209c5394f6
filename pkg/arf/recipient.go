package arf

import (
	"net/mail"
	"strings"
)

// FeedbackID is Gmail's Feedback-ID header field, "a:b:c:SenderId": up to
// three optional identifiers the sender chose (campaign, customer, mail
// type, …) and a mandatory sender identifier, last. Gmail's Postmaster
// Tools aggregate complaints by these values.
type FeedbackID struct {
	// Raw is the field value as it appeared, trimmed.
	Raw string
	// Identifiers are the colon-separated parts before SenderID, in order
	// (empty parts kept, so positions stay meaningful).
	Identifiers []string
	// SenderID is the last part.
	SenderID string
}

// ParseFeedbackID splits a Feedback-ID value into its parts. It reports
// false when the value is empty.
func ParseFeedbackID(v string) (FeedbackID, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return FeedbackID{}, false
	}
	parts := strings.Split(v, ":")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return FeedbackID{Raw: v, Identifiers: parts[:len(parts)-1], SenderID: parts[len(parts)-1]}, true
}

// LooksRedacted reports whether a recipient address (or a To field value)
// carries no usable recipient: empty, a group with no address ("Undisclosed
// Recipients"), or an address a provider has masked — "redacted@…",
// "[redacted]", a local part of only x, * or # characters, and the like.
// Providers redact the recipient of a complaint (RFC 6590) and the platform
// then recovers it from its own return path instead.
func LooksRedacted(addr string) bool {
	a := strings.ToLower(strings.TrimSpace(addr))
	a = strings.Trim(a, "<> \t\"")
	if a == "" {
		return true
	}
	if strings.Contains(a, "redacted") || strings.Contains(a, "undisclosed") {
		return true
	}
	at := strings.LastIndexByte(a, '@')
	if at < 0 {
		// Not an address at all ("Undisclosed Recipients", "recipient list
		// suppressed", a bare word).
		return true
	}
	local := a[:at]
	if local == "" || a[at+1:] == "" {
		return true
	}
	if len(local) >= 3 && strings.Trim(local, "x*#.[]") == "" {
		return true
	}
	return false
}

// addrSpec returns the address inside a path or mailbox: "<a@b>" → "a@b",
// `"Name" <a@b>` → "a@b", "a@b (comment)" → "a@b". The null path "<>"
// gives "". The local part keeps its case (it may carry a signed token).
func addrSpec(v string) string {
	v = strings.TrimSpace(v)
	if v == "" || v == "<>" {
		return ""
	}
	if a, err := mail.ParseAddress(v); err == nil {
		return a.Address
	}
	if i := strings.LastIndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return strings.TrimSpace(v[i+1 : i+j])
		}
	}
	v = stripComments(v)
	if f := strings.Fields(v); len(f) > 0 {
		return strings.Trim(f[0], "<>;,")
	}
	return ""
}

// addrList returns the addresses of an address-list field (RFC 5322
// §3.4), falling back to any address-like words when the list does not
// parse. A group without members gives none.
func addrList(v string) []string {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil
	}
	if as, err := mail.ParseAddressList(v); err == nil {
		out := make([]string, 0, len(as))
		for _, a := range as {
			out = append(out, a.Address)
		}
		return out
	}
	var out []string
	for _, w := range strings.FieldsFunc(v, func(r rune) bool {
		return r == ',' || r == ';' || r == ' ' || r == '\t' || r == '<' || r == '>' || r == '"'
	}) {
		if i := strings.IndexByte(w, '@'); i > 0 && i < len(w)-1 {
			out = append(out, w)
		}
	}
	return out
}
