package warmup

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// PolicySignals reads signals from the history of the policy bucket, where
// the reputation monitor keeps its pause and throttle decisions: an IP
// subject looks at its source IP scope, a domain subject at its sending
// domain scope, both alone and at the subject's provider.
type PolicySignals struct {
	KV jetstream.KeyValue
}

// Signal returns the worst policy in force at any instant of [from, to).
func (p *PolicySignals) Signal(ctx context.Context, s Subject, from, to time.Time) (Signal, error) {
	kind := mailwavev1.ScopeKind_SCOPE_KIND_SOURCE_IP
	if s.Kind == Domain {
		kind = mailwavev1.ScopeKind_SCOPE_KIND_SENDING_DOMAIN
	}
	worst := Clean
	for _, provider := range []string{"", s.Provider} {
		key := mailwavev1.PolicyKey(&mailwavev1.PolicyScope{Kind: kind, Value: s.ID, Provider: provider})
		hist, err := p.KV.History(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return Clean, fmt.Errorf("warmup: policy history %s: %w", key, err)
		}
		worst = max(worst, SignalOf(hist, from, to))
	}
	return worst, nil
}

// SignalOf returns the worst policy of a key's history (oldest first) in
// force at any instant of [from, to). Each entry is in force from its
// creation (the PolicyChange's created_at, else the entry's) until the
// next entry or its expiry.
func SignalOf(hist []jetstream.KeyValueEntry, from, to time.Time) Signal {
	type span struct {
		start, end time.Time
		sig        Signal
	}
	spans := make([]span, 0, len(hist))
	for _, e := range hist {
		sp := span{start: e.Created(), end: time.Unix(1<<40, 0)}
		if e.Operation() == jetstream.KeyValuePut {
			var pc mailwavev1.PolicyChange
			if err := proto.Unmarshal(e.Value(), &pc); err == nil {
				if pc.GetCreatedAt() != nil {
					sp.start = pc.GetCreatedAt().AsTime()
				}
				if pc.GetExpiresAt() != nil {
					sp.end = pc.GetExpiresAt().AsTime()
				}
				switch pc.GetAction() {
				case mailwavev1.PolicyAction_POLICY_ACTION_PAUSE:
					sp.sig = Paused
				case mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE, mailwavev1.PolicyAction_POLICY_ACTION_PIN_RATE:
					sp.sig = Throttled
				}
			}
		}
		spans = append(spans, sp)
	}
	sort.SliceStable(spans, func(i, j int) bool { return spans[i].start.Before(spans[j].start) })
	worst := Clean
	for i, sp := range spans {
		end := sp.end
		if i+1 < len(spans) && spans[i+1].start.Before(end) {
			end = spans[i+1].start
		}
		if sp.sig > worst && sp.start.Before(to) && end.After(from) {
			worst = sp.sig
		}
	}
	return worst
}
