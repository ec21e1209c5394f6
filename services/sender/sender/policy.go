package sender

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// policies mirrors the policy KV bucket in memory. A KV watch delivers a
// change to every sender replica within milliseconds, so a pause decided
// by the reputation monitor holds everywhere within a second.
type policies struct {
	log   *slog.Logger
	mu    sync.RWMutex
	byKey map[string]*mailwavev1.PolicyChange
	ready chan struct{}
	// known is the number of policies mirrored: what this replica holds
	// itself to, for dashboards and for tests that wait for a watch.
	known prometheus.Gauge
}

func newPolicies(log *slog.Logger, reg prometheus.Registerer) *policies {
	p := &policies{log: log, byKey: map[string]*mailwavev1.PolicyChange{}, ready: make(chan struct{}),
		known: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailwave_sender_policies",
			Help: "Policies (pause, throttle, pinned rate) this replica has mirrored from the policy bucket.",
		})}
	reg.MustRegister(p.known)
	return p
}

// watch follows the bucket until ctx ends. The first pass (every current
// key) completes before ready is closed.
func (p *policies) watch(ctx context.Context, js jetstream.JetStream) error {
	kv, err := js.KeyValue(ctx, mailwavev1.BucketPolicy)
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	go func() {
		defer func() { _ = w.Stop() }()
		initial := true
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					if initial {
						initial = false
						close(p.ready)
					}
					continue
				}
				p.apply(e)
			}
		}
	}()
	return nil
}

func (p *policies) apply(e jetstream.KeyValueEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	defer func() { p.known.Set(float64(len(p.byKey))) }()
	if e.Operation() != jetstream.KeyValuePut {
		delete(p.byKey, e.Key())
		return
	}
	var pc mailwavev1.PolicyChange
	if err := proto.Unmarshal(e.Value(), &pc); err != nil {
		p.log.Warn("policy unreadable", "key", e.Key(), "err", err)
		return
	}
	p.byKey[e.Key()] = &pc
}

// waitReady waits for the first pass of the watch, so no message is sent
// before the pauses in force are known.
func (p *policies) waitReady(ctx context.Context) error {
	select {
	case <-p.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
		return errors.New("sender: policy bucket not read in 10s")
	}
}

// decision is what the policies in force say about one message.
type decision struct {
	// paused holds the message until resume; the policy says why.
	paused *mailwavev1.PolicyChange
	// factor multiplies the shaping rates (1 without throttle).
	factor float64
	// pinPerHour fixes the rate when a person pinned it (0: not pinned).
	pinPerHour float64
}

// scopesOf lists the policy keys that apply to a message going to
// provider from sourceIP: each scope alone, and each scope at that
// provider.
func scopesOf(d *mailwavev1.DispatchMessage, sourceIP, provider string) []string {
	r := d.GetRouting()
	type sv struct {
		kind  mailwavev1.ScopeKind
		value string
	}
	var scopes []sv
	add := func(k mailwavev1.ScopeKind, v string) {
		if v != "" {
			scopes = append(scopes, sv{k, v})
		}
	}
	add(mailwavev1.ScopeKind_SCOPE_KIND_POOL, r.GetPool())
	add(mailwavev1.ScopeKind_SCOPE_KIND_SOURCE_IP, sourceIP)
	add(mailwavev1.ScopeKind_SCOPE_KIND_SENDING_DOMAIN, r.GetSendingDomain())
	add(mailwavev1.ScopeKind_SCOPE_KIND_TENANT, d.GetTenant())
	add(mailwavev1.ScopeKind_SCOPE_KIND_BRAND, d.GetBrand())
	add(mailwavev1.ScopeKind_SCOPE_KIND_CAMPAIGN, d.GetCampaignId())
	keys := make([]string, 0, 2*len(scopes)+1)
	if provider != "" {
		keys = append(keys, mailwavev1.PolicyKey(&mailwavev1.PolicyScope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_PROVIDER, Value: provider}))
	}
	for _, s := range scopes {
		keys = append(keys, mailwavev1.PolicyKey(&mailwavev1.PolicyScope{Kind: s.kind, Value: s.value}))
		if provider != "" {
			keys = append(keys, mailwavev1.PolicyKey(&mailwavev1.PolicyScope{Kind: s.kind, Value: s.value, Provider: provider}))
		}
	}
	return keys
}

// decide returns the decision for d sent from sourceIP to provider at
// instant now. Expired policies no longer apply.
func (p *policies) decide(d *mailwavev1.DispatchMessage, sourceIP, provider string, now time.Time) decision {
	out := decision{factor: 1}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if len(p.byKey) == 0 {
		return out
	}
	for _, k := range scopesOf(d, sourceIP, provider) {
		pc := p.byKey[k]
		if pc == nil {
			continue
		}
		if exp := pc.GetExpiresAt(); exp != nil && !exp.AsTime().After(now) {
			continue
		}
		switch pc.GetAction() {
		case mailwavev1.PolicyAction_POLICY_ACTION_PAUSE:
			if out.paused == nil {
				out.paused = pc
			}
		case mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE:
			if f := pc.GetRateFactor(); f > 0 && f < out.factor {
				out.factor = f
			}
		case mailwavev1.PolicyAction_POLICY_ACTION_PIN_RATE:
			if r := pc.GetRatePerHour(); r > 0 && (out.pinPerHour == 0 || r < out.pinPerHour) {
				out.pinPerHour = r
			}
		}
	}
	return out
}
