package inbounddsn

import (
	"errors"
	"fmt"
	"strings"

	"github.com/mailwave/mailwave/pkg/dsn"
	"github.com/mailwave/mailwave/pkg/inbound"
	"github.com/mailwave/mailwave/pkg/verp"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// receiverPolicy is the bounce receiver's inbound.Policy and
// inbound.Classifier: it takes mail for the signed VERP addresses of its
// bounce domains and for their postmaster (RFC 5321 §4.5.1 requires it),
// and sets replies apart from bounces.
type receiverPolicy struct {
	domains map[string]bool
	signer  *verp.Signer
}

func newReceiverPolicy(domains []string, signer *verp.Signer) *receiverPolicy {
	p := &receiverPolicy{domains: map[string]bool{}, signer: signer}
	for _, d := range domains {
		p.domains[strings.ToLower(d)] = true
	}
	return p
}

// Recipient accepts a VERP address whose signature checks; a forged or
// unknown one is refused 550 5.1.1 before the message is even sent, so a
// forged bounce cannot reach the counters.
func (p *receiverPolicy) Recipient(rcpt string) (mailwavev1.InboundKind, error) {
	if !p.domains[inbound.Domain(rcpt)] {
		return 0, fmt.Errorf("%w: %s", inbound.ErrRelayDenied, rcpt)
	}
	local := strings.ToLower(rcpt[:strings.LastIndexByte(rcpt, '@')])
	if local == "postmaster" {
		return mailwavev1.InboundKind_INBOUND_KIND_DSN, nil
	}
	if _, err := p.signer.Parse(rcpt); err != nil {
		if errors.Is(err, verp.ErrBadSignature) {
			return 0, fmt.Errorf("%w: %s: forged return path: %w", inbound.ErrUnknownRecipient, rcpt, err)
		}
		return 0, fmt.Errorf("%w: %s: %w", inbound.ErrUnknownRecipient, rcpt, err)
	}
	return mailwavev1.InboundKind_INBOUND_KIND_DSN, nil
}

// Classify sends auto-replies (RFC 3834 §5: Auto-Submitted: auto-replied,
// X-Autoreply, Precedence, vacation subjects) and any other mail that is
// not a bounce — a person answering the return path — to the reply
// subject, so they are never counted as bounces.
func (p *receiverPolicy) Classify(kind mailwavev1.InboundKind, raw []byte) mailwavev1.InboundKind {
	if kind != mailwavev1.InboundKind_INBOUND_KIND_DSN {
		return kind
	}
	return classify(raw)
}

func classify(raw []byte) mailwavev1.InboundKind {
	m, err := dsn.Parse(raw)
	if err != nil {
		// Not a message at all: keep it with the bounces, where the
		// consumer counts it as unreadable.
		return mailwavev1.InboundKind_INBOUND_KIND_DSN
	}
	switch m.Kind {
	case dsn.KindAutoreply, dsn.KindOther:
		return mailwavev1.InboundKind_INBOUND_KIND_REPLY
	}
	return mailwavev1.InboundKind_INBOUND_KIND_DSN
}
