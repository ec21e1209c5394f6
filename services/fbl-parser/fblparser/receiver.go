package fblparser

import (
	"fmt"
	"strings"

	"github.com/mailwave/mailwave/pkg/inbound"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// ReceiverPolicy is the inbound.Policy of the SMTP intake: it takes mail
// for the configured FBL addresses, for every address of an FBL domain
// given without a local part, and for postmaster at each of those domains
// (RFC 5321 §4.5.1 requires it); another address on one of those domains
// is an unknown recipient, and any other domain a relay attempt. Each
// entry of addrs is an address or a bare domain, compared without case.
func ReceiverPolicy(addrs []string) inbound.Policy {
	exact := map[string]bool{}
	domains := map[string]bool{}
	whole := map[string]bool{}
	for _, a := range addrs {
		a = strings.ToLower(strings.TrimSpace(a))
		if !strings.Contains(a, "@") {
			whole[a] = true
			domains[a] = true
			continue
		}
		exact[a] = true
		domains[inbound.Domain(a)] = true
	}
	const kind = mailwavev1.InboundKind_INBOUND_KIND_FBL
	return inbound.PolicyFunc(func(rcpt string) (mailwavev1.InboundKind, error) {
		r := strings.ToLower(strings.TrimSpace(rcpt))
		d := inbound.Domain(r)
		local := strings.TrimSuffix(r, "@"+d)
		switch {
		case exact[r], whole[d]:
			return kind, nil
		case domains[d] && local == "postmaster":
			return kind, nil
		case domains[d]:
			return 0, fmt.Errorf("%w: %s", inbound.ErrUnknownRecipient, rcpt)
		default:
			return 0, fmt.Errorf("%w: %s", inbound.ErrRelayDenied, rcpt)
		}
	})
}
