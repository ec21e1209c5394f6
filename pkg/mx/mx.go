// Package mx finds where mail for a domain goes (RFC 5321 §5.1) and which
// sending budget it falls under.
//
// Route looks up the domain's MX records (RFC 1035 §3.3.9), sorts them by
// preference with equal preferences in random order, falls back to the
// implicit MX (the domain's own address) when there is none, refuses a
// null MX (RFC 7505), and resolves each MX host's addresses. Answers are
// cached by their TTL, negative answers by the SOA minimum (RFC 2308 §5),
// and concurrent lookups of one name share one query.
//
// The set of MX hosts is the destination *site*; the site maps to a
// *provider* through a table of MX patterns (DefaultProviders), so that
// gmail.com and a Google-hosted company domain share the "google"
// budget, while each unknown site is its own provider.
//
// DNS goes through miekg/dns to a configured recursive resolver (the
// simulator's DNS in tests, /etc/resolv.conf otherwise): UDP with EDNS0,
// TCP when the answer is truncated, a timeout per query and a retry over
// the servers.
package mx

import (
	"errors"
	"fmt"
	"net/netip"
)

// Errors returned by Route. The first four are permanent: retrying will
// not help, the message bounces. Every other error is temporary.
var (
	// ErrNullMX: the domain publishes "MX 0 ." (RFC 7505): it accepts no mail.
	ErrNullMX = errors.New("mx: null MX")
	// ErrNoSuchDomain: the domain does not exist (NXDOMAIN).
	ErrNoSuchDomain = errors.New("mx: no such domain")
	// ErrNoMailServer: the domain exists but has neither MX nor address
	// records (RFC 5321 §5.1).
	ErrNoMailServer = errors.New("mx: no mail server")
	// ErrInvalidDomain: the name cannot be a mail domain (empty, too
	// long, bad label, an address literal).
	ErrInvalidDomain = errors.New("mx: invalid domain")

	// ErrTemporary: the DNS failed to answer (SERVFAIL, REFUSED, timeout,
	// network error). Temporary.
	ErrTemporary = errors.New("mx: temporary dns failure")
	// ErrNoAddress: MX records exist but none of their hosts has an
	// address. Temporary: it is usually a transient misconfiguration, and
	// the message's maximum age bounds the retries.
	ErrNoAddress = errors.New("mx: no address for any mx host")
	// ErrInvalidOption: an Option was given a value it cannot use.
	ErrInvalidOption = errors.New("mx: invalid option")
)

// IsPermanent reports whether err means the domain cannot receive mail.
func IsPermanent(err error) bool {
	return errors.Is(err, ErrNullMX) || errors.Is(err, ErrNoSuchDomain) ||
		errors.Is(err, ErrNoMailServer) || errors.Is(err, ErrInvalidDomain)
}

// IsTemporary reports whether err is a failure that a later attempt may
// not have: any non-nil error that is not permanent.
func IsTemporary(err error) bool { return err != nil && !IsPermanent(err) }

func invalidOption(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOption}, args...)...)
}

// Route is where to deliver mail for one domain.
type Route struct {
	// Domain is the queried domain in ASCII (A-labels), lower case,
	// without the trailing dot.
	Domain string
	// Site is the destination site: the MX host names, sorted and joined
	// with ","; for an implicit MX, the domain.
	Site string
	// Provider is the provider whose pattern matches the most preferred
	// matching MX host, or Site when none matches.
	Provider string
	// Implicit is true when the domain has no MX records and its own
	// address is used (RFC 5321 §5.1).
	Implicit bool
	// Hosts are the MX hosts with addresses, in the order to try them:
	// by preference, equal preferences shuffled.
	Hosts []Host
	// Skipped are the MX hosts left out because their addresses could
	// not be resolved, with why.
	Skipped []SkippedHost
}

// Host is one MX host and its addresses (IPv4 first).
type Host struct {
	Name       string
	Preference uint16
	Addrs      []netip.Addr
}

// SkippedHost is an MX host without a usable address.
type SkippedHost struct {
	Name string
	Err  error
}
