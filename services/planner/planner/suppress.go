package planner

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// suppressions answers whether a recipient must not be mailed for a
// request: a global suppression, one for the whole brand (hard bounces,
// complaints, manual), or an unsubscribe from the request's communication
// type.
type suppressions struct {
	kv jetstream.KeyValue
}

// check returns the suppression that applies, or nil. Errors are the
// store's, and temporary.
func (s *suppressions) check(ctx context.Context, req *mailwavev1.SendRequest, addr string) (*mailwavev1.Suppression, error) {
	keys := []string{
		mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_GLOBAL, "", "", "", addr),
		mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND, req.GetTenant(), req.GetBrand(), "", addr),
	}
	if ct := req.GetCommunicationType(); ct != "" {
		keys = append(keys, mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_COMMUNICATION_TYPE,
			req.GetTenant(), req.GetBrand(), ct, addr))
	}
	for _, k := range keys {
		e, err := s.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("planner: suppression lookup: %w", err)
		}
		var sup mailwavev1.Suppression
		if err := proto.Unmarshal(e.Value(), &sup); err != nil {
			// A record we cannot read still says "suppressed": err on the
			// side of not mailing.
			sup = mailwavev1.Suppression{Address: addr, Reason: "unreadable suppression record"}
		}
		return &sup, nil
	}
	return nil, nil
}
