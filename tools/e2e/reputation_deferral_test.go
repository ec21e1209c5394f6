package e2e_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/reputation-monitor/reputation"
)

// deferralPolicy is the shipped deferral rule with thresholds a test
// reaches with tens of messages and a step every 400ms instead of 5m.
const deferralPolicy = `
resume: {steps: [0.25, 0.5], step_for: 30m}
rules:
  - name: deferrals
    rate: deferral_rate
    scopes: [source_ip@provider]
    window: 15m
    min_volume: 10
    above: 0.3
    recover_below: 0.1
    action: step
    step: 0.5
    floor: 0.125
    every: 400ms
    for: 1h
blocklists: []
`

// Rising deferrals at the Gmail-like provider lower the source IP's rate
// factor there one step at a time down to the floor; when deferrals fall,
// it rises step by step back to full rate.
func TestDeferralsLowerTheRateFactorStepByStepAndRecoveryRaisesIt(t *testing.T) {
	const every = 400 * time.Millisecond
	e := startWith(t, nil, reputationStack(t, deferralPolicy, func(c *reputation.Config) {
		// Steps come from the sweep while no new event arrives.
		c.SweepInterval = 150 * time.Millisecond
	}, nil))
	mon := e.st.HTTP["reputation-monitor"]
	f := watchFeed(t, e.nc)
	ipGoogle := reputation.Scope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_SOURCE_IP, Value: "127.0.0.3", Provider: "google"}
	throttle, resume := mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE, mailwavev1.PolicyAction_POLICY_ACTION_RESUME

	// 4 of 10 attempts deferred (450 4.2.1, retried in an hour): 40 %.
	e.sendTo(t, "defer-1", append(addresses("ok", "gmail.com", 6), addresses("defer", "gmail.com", 4)...)...)
	waitCounted(t, mon, map[string]int{"delivered": 6, "deferred": 4})
	f.waitChange(t, ipGoogle.Key(), 15*time.Second, "the floor", func(pc *mailwavev1.PolicyChange) bool {
		return pc.GetAction() == throttle && pc.GetRateFactor() == 0.125
	})
	testenv.Eventually(t, 10*time.Second, func() bool { return e.senderPolicies(t) == 1 }, "the sender did not mirror the throttle")
	st := status(t, mon)
	if c := statusScope(t, st, ipGoogle.Key()).Windows["15m"]; c.Counts["deferred"] != 4 || c.Counts["delivered"] != 6 || c.Rates["deferral_rate"] != 0.4 {
		t.Errorf("/v1/status of %s: %+v", ipGoogle, c)
	}
	if p := statusPolicy(t, st, ipGoogle.Key()); p.GetAction() != throttle || p.GetRateFactor() != 0.125 {
		t.Errorf("/v1/status policy %v", p)
	}
	if v, ok := sample(t, mon, "mailwave_reputation_policy_factor", map[string]string{"key": ipGoogle.Key(), "action": "throttle"}); !ok || v != 0.125 {
		t.Errorf("policy factor metric %v %v", v, ok)
	}

	// Deferrals fall: 40 more delivered make it 4 in 50, under 10 %.
	e.sendTo(t, "defer-2", addresses("more", "gmail.com", 40)...)
	waitCounted(t, mon, map[string]int{"delivered": 46, "deferred": 4})
	f.waitChange(t, ipGoogle.Key(), 15*time.Second, "resume", func(pc *mailwavev1.PolicyChange) bool {
		return pc.GetAction() == resume
	})

	changes := f.changesOf(ipGoogle.Key())
	want := []step{{throttle, 0.5}, {throttle, 0.25}, {throttle, 0.125}, {throttle, 0.25}, {throttle, 0.5}, {resume, 0}}
	if !slices.Equal(stepsOf(changes), want) {
		t.Fatalf("changes of %s:%s", ipGoogle.Key(), describe(changes))
	}
	for i, pc := range changes {
		word := "rising"
		switch {
		case i == len(changes)-1:
			word = "recovered"
		case i >= 3:
			word = "falling"
		}
		if pc.GetDecidedBy() != "deferrals" || !strings.Contains(pc.GetReason(), word) ||
			pc.GetEvidence()["measure"] != "deferral_rate" || pc.GetEvidence()["window"] != "15m" || pc.GetEvidence()["deferred"] != "4" {
			t.Errorf("change %d: %v", i, pc)
		}
		if i > 0 {
			if gap := pc.GetCreatedAt().AsTime().Sub(changes[i-1].GetCreatedAt().AsTime()); gap < every {
				t.Errorf("change %d came %v after the one before, want at least %v", i, gap, every)
			}
		}
	}
	if v, ok := sample(t, mon, "mailwave_reputation_rate", map[string]string{"scope_kind": "source_ip", "scope": "127.0.0.3",
		"provider": "google", "window": "15m", "rate": "deferral_rate"}); !ok || v != 0.08 {
		t.Errorf("deferral rate metric %v %v, want 0.08", v, ok)
	}
	// Every message was delivered but the four deferred ones, which wait
	// for their retry.
	if n := len(e.sim.Ledger().Snapshot().Accepted("google", netip.MustParseAddr("127.0.0.3"))); n != 46 {
		t.Errorf("google accepted %d messages, want 46", n)
	}
}
