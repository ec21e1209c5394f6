package fblparser

import (
	"bytes"
	"context"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailwave/mailwave/pkg/arf"
	"github.com/mailwave/mailwave/pkg/inbound"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// Trust decides whether a report is acted on. A report read from a
// feedback mailbox is trusted when that mailbox is configured trusted; a
// report received by SMTP when its sender's domain (envelope or From) is
// one of SMTPDomains (or below one) and, with RequireDKIM, it carries a
// DKIM signature (RFC 6376) that verifies for a domain of that list.
type Trust struct {
	// Mailboxes maps a mailbox name to whether it is trusted.
	Mailboxes map[string]bool
	// SMTPDomains are the feedback-loop operators' domains.
	SMTPDomains []string
	// RequireDKIM demands a verifying DKIM signature of an SMTPDomains
	// domain on SMTP reports.
	RequireDKIM bool
	// LookupTXT resolves DKIM key records; nil uses the system resolver.
	LookupTXT func(domain string) ([]string, error)
}

// Check reports whether in is trusted, and why not.
func (t *Trust) Check(in *mailwavev1.InboundMessage, rep *arf.Report) (bool, string) {
	if t == nil {
		return false, "no trust configured"
	}
	src := in.GetSource()
	if name, ok := strings.CutPrefix(src, "imap:"); ok {
		if t.Mailboxes[name] {
			return true, ""
		}
		return false, "mailbox " + name + " is not trusted"
	}
	from := ""
	if rep != nil {
		from = rep.Header.Get("From")
		if a, err := rep.Header.AddressList("From"); err == nil && len(a) > 0 {
			from = a[0].Address
		}
	}
	if !t.domainOK(inbound.Domain(in.GetMailFrom())) && !t.domainOK(inbound.Domain(from)) {
		return false, "sender domain is not a configured feedback loop"
	}
	if !t.RequireDKIM {
		return true, ""
	}
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(in.GetRaw()), &dkim.VerifyOptions{LookupTXT: t.LookupTXT, MaxVerifications: 5})
	if err != nil && len(verifs) == 0 {
		return false, "dkim: " + err.Error()
	}
	for _, v := range verifs {
		if v.Err == nil && t.domainOK(strings.ToLower(v.Domain)) {
			return true, ""
		}
	}
	return false, "no valid dkim signature of a configured domain"
}

func (t *Trust) domainOK(d string) bool {
	if d == "" {
		return false
	}
	for _, c := range t.SMTPDomains {
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
