package inbound

import (
	"fmt"
	"strings"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// Domain returns the lower-cased domain of addr, or "" when addr has no
// '@'.
func Domain(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(addr[at+1:], "."))
}

// Addresses returns a Policy that accepts exactly addrs (compared without
// case) as mail of kind: fbl-parser's configured feedback addresses. Other
// addresses on their domains are unknown recipients; addresses on any
// other domain are relay attempts.
func Addresses(kind mailwavev1.InboundKind, addrs ...string) Policy {
	exact := map[string]bool{}
	domains := map[string]bool{}
	for _, a := range addrs {
		a = strings.ToLower(strings.TrimSpace(a))
		exact[a] = true
		domains[Domain(a)] = true
	}
	return PolicyFunc(func(rcpt string) (mailwavev1.InboundKind, error) {
		r := strings.ToLower(strings.TrimSpace(rcpt))
		switch {
		case exact[r]:
			return kind, nil
		case domains[Domain(r)]:
			return 0, fmt.Errorf("%w: %s", ErrUnknownRecipient, rcpt)
		default:
			return 0, fmt.Errorf("%w: %s", ErrRelayDenied, rcpt)
		}
	})
}
