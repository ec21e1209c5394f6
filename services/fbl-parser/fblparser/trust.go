package fblparser

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailwave/mailwave/pkg/arf"
	"github.com/mailwave/mailwave/pkg/inbound"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// SourceTrust says when the reports of one source are acted on.
type SourceTrust struct {
	// Trusted must be set for anything from the source to be acted on.
	Trusted bool
	// Domains, when not empty, are the feedback-loop operators' domains:
	// the report's author (its From, or for SMTP also the envelope
	// sender) must be in one of them or below.
	Domains []string
	// RequireDKIM demands a DKIM signature (RFC 6376) of a Domains domain
	// that verifies.
	RequireDKIM bool
}

// Trust decides whether a report is acted on. A report read from a
// feedback mailbox ("imap:<name>" source) follows that mailbox's
// SourceTrust; a report received by SMTP follows SMTP, which the service
// sets to its configured reporter domains with DKIM required. Whatever is
// not trusted is kept in quarantine: stored, reported, never acted on.
type Trust struct {
	// Mailboxes maps a mailbox name to its trust.
	Mailboxes map[string]SourceTrust
	// SMTP is the trust of reports received by SMTP.
	SMTP SourceTrust
	// LookupTXT resolves DKIM key records; nil uses the system resolver.
	LookupTXT func(domain string) ([]string, error)
}

// MailboxTrust is the SourceTrust of a configured mailbox.
func MailboxTrust(m Mailbox) SourceTrust {
	return SourceTrust{Trusted: m.Trusted, Domains: m.Reporters, RequireDKIM: m.RequireDKIM}
}

// ErrTrustTemporary wraps a check that could not be decided now (a DKIM
// key lookup that failed temporarily, RFC 6376 §6.1.2): the report is
// looked at again later rather than quarantined for good.
var ErrTrustTemporary = errors.New("fblparser: trust undecided")

// Check reports whether in is trusted, and why not. It returns an error
// wrapping ErrTrustTemporary when that cannot be decided now.
func (t *Trust) Check(in *mailwavev1.InboundMessage, rep *arf.Report) (bool, string, error) {
	if t == nil {
		return false, "no trust configured", nil
	}
	src := in.GetSource()
	st, what := t.SMTP, "smtp"
	if name, ok := strings.CutPrefix(src, "imap:"); ok {
		var known bool
		if st, known = t.Mailboxes[name]; !known {
			return false, "mailbox " + name + " is not configured", nil
		}
		what = "mailbox " + name
	}
	if !st.Trusted {
		return false, what + " is not a trusted source", nil
	}
	if len(st.Domains) == 0 {
		if st.RequireDKIM {
			return false, what + " requires dkim but names no reporter domain", nil
		}
		return true, "", nil
	}
	author := ""
	if rep != nil {
		author = rep.Header.Get("From")
		if a, err := rep.Header.AddressList("From"); err == nil && len(a) > 0 {
			author = a[0].Address
		}
	}
	envelope := ""
	if what == "smtp" {
		envelope = in.GetMailFrom()
	}
	if !domainIn(inbound.Domain(author), st.Domains) && !domainIn(inbound.Domain(envelope), st.Domains) {
		return false, "reporter " + inbound.Domain(author) + " is not configured for " + what, nil
	}
	if !st.RequireDKIM {
		return true, "", nil
	}
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(in.GetRaw()), &dkim.VerifyOptions{LookupTXT: t.LookupTXT, MaxVerifications: 5})
	if err != nil && len(verifs) == 0 {
		return false, "dkim: " + err.Error(), nil
	}
	why := "no dkim signature"
	var temp error
	for _, v := range verifs {
		switch {
		case v.Err != nil && dkim.IsTempFail(v.Err) && domainIn(strings.ToLower(v.Domain), st.Domains):
			temp = fmt.Errorf("%w: dkim key of %s: %v", ErrTrustTemporary, v.Domain, v.Err)
		case v.Err != nil:
			why = "dkim signature of " + v.Domain + " does not verify: " + v.Err.Error()
		case domainIn(strings.ToLower(v.Domain), st.Domains):
			return true, "", nil
		default:
			why = "dkim signature of " + v.Domain + ", not of a configured reporter"
		}
	}
	if temp != nil {
		return false, "", temp
	}
	return false, why, nil
}

// domainIn reports whether d is one of domains or below one.
func domainIn(d string, domains []string) bool {
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	if d == "" {
		return false
	}
	for _, c := range domains {
		c = strings.ToLower(strings.TrimSuffix(c, "."))
		if d == c || strings.HasSuffix(d, "."+c) {
			return true
		}
	}
	return false
}

// ResolverLookupTXT returns a LookupTXT that asks the DNS server at addr
// (host:port) only, or the system resolver when addr is empty.
func ResolverLookupTXT(addr string) func(string) ([]string, error) {
	r := net.DefaultResolver
	if addr != "" {
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
	}
	return func(domain string) ([]string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return r.LookupTXT(ctx, domain)
	}
}
