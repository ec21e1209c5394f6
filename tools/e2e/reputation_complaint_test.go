package e2e_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/reputation-monitor/reputation"
)

// complaintPolicy pauses a tenant at a provider whose complaint rate over
// the last hour passes 6 % of at least 20 deliveries: the shipped rule
// (0.3 % of 1,000) scaled down so the test sends tens of messages.
const complaintPolicy = `
resume: {steps: [0.25, 0.5], step_for: 30m}
rules:
  - name: complaint-pause
    rate: complaint_rate
    scopes: [tenant@provider]
    window: 1h
    min_volume: 20
    above: 0.06
    action: pause
    for: 1h
blocklists: []
`

// A complaint spike at the Gmail-like provider pauses the tenant's traffic
// there within a second of the complaint that crosses the threshold —
// written to the policy bucket, announced with its reason and evidence,
// shown on /v1/status and /metrics, and mirrored by the sender, which then
// holds that mail — while the tenant's Yahoo traffic goes on. The monitor
// runs with its default evaluation interval.
func TestComplaintSpikePausesTenantAtProviderWithinASecond(t *testing.T) {
	e := startWith(t, nil, reputationStack(t, complaintPolicy, nil, nil))
	ctx := testenv.Context(t)
	mon := e.st.HTTP["reputation-monitor"]
	f := watchFeed(t, e.nc)
	gmail, yahoo := addresses("reader", "gmail.com", 20), addresses("reader", "yahoo.com", 10)
	e.sendTo(t, "spike-1", append(gmail, yahoo...)...)
	evs := e.terminal(t, "acme", "spike-1", 30)
	for rcpt, ev := range evs {
		if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED {
			t.Fatalf("%s: %v %s", rcpt, ev.GetKind(), ev.GetResponse())
		}
	}
	waitCounted(t, mon, map[string]int{"delivered": 30})

	tenantGoogle := reputation.Scope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_TENANT, Value: "acme", Provider: "google"}
	kv, err := e.js.KeyValue(ctx, mailwavev1.BucketPolicy)
	if err != nil {
		t.Fatal(err)
	}
	// One complaint in 20 is 5 %: under the threshold, nothing happens.
	e.publishEvent(t, complaintOf(evs[gmail[0]]))
	waitCounted(t, mon, map[string]int{"delivered": 30, "complained": 1})
	rateLabels := map[string]string{"scope_kind": "tenant", "scope": "acme", "provider": "google", "window": "1h", "rate": "complaint_rate"}
	testenv.Eventually(t, 10*time.Second, func() bool {
		v, ok := sample(t, mon, "mailwave_reputation_rate", rateLabels)
		return ok && v == 0.05
	}, "the monitor did not evaluate 1 complaint in 20")
	if _, err := kv.Get(ctx, tenantGoogle.Key()); err != jetstream.ErrKeyNotFound {
		t.Fatalf("a policy under the threshold: %v", err)
	}

	// The second complaint crosses it. Time it to the pause in the bucket
	// and to the sender holding it.
	w, err := kv.Watch(ctx, tenantGoogle.Key(), jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	crossing := complaintOf(evs[gmail[1]])
	t0 := time.Now()
	e.publishEvent(t, crossing)
	var entry jetstream.KeyValueEntry
	select {
	case entry = <-w.Updates():
	case <-time.After(10 * time.Second):
		t.Fatal("no policy written for tenant acme at google")
	}
	toKV := time.Since(t0)
	testenv.Eventually(t, 10*time.Second, func() bool { return e.senderPolicies(t) == 1 }, "the sender did not mirror the pause")
	toSender := time.Since(t0)
	t.Logf("complaint that crossed the threshold → pause in the policy bucket: %v; → mirrored by the sender: %v", toKV, toSender)
	if toKV > time.Second || toSender > time.Second {
		t.Errorf("the pause took %v to the bucket and %v to the sender, want within a second", toKV, toSender)
	}

	pc := &mailwavev1.PolicyChange{}
	if err := proto.Unmarshal(entry.Value(), pc); err != nil {
		t.Fatal(err)
	}
	ev := pc.GetEvidence()
	if pc.GetAction() != mailwavev1.PolicyAction_POLICY_ACTION_PAUSE || pc.GetDecidedBy() != "complaint-pause" ||
		!strings.Contains(pc.GetReason(), "complaint_rate") || ev["delivered"] != "20" || ev["complained"] != "2" ||
		ev["window"] != "1h" || ev["value"] != "0.1" || ev["threshold"] != "0.06" {
		t.Fatalf("policy %v", pc)
	}
	if exp := pc.GetExpiresAt().AsTime().Sub(pc.GetCreatedAt().AsTime()); exp != time.Hour {
		t.Errorf("the pause lasts %v, want the rule's 1h", exp)
	}
	announced := f.waitChange(t, tenantGoogle.Key(), 10*time.Second, "pause", func(a *mailwavev1.PolicyChange) bool { return a.GetId() == pc.GetId() })
	if !proto.Equal(announced, pc) {
		t.Errorf("announced %v, stored %v", announced, pc)
	}
	if a := f.waitAlert(t, "paused", "tenant=acme@google"); a.GetReason() != pc.GetReason() || a.GetEvidence()["complained"] != "2" {
		t.Errorf("alert %v", a)
	}

	// The state is on /v1/status and /metrics.
	st := status(t, mon)
	if sp := statusPolicy(t, st, tenantGoogle.Key()); !proto.Equal(sp, pc) {
		t.Errorf("/v1/status policy %v, want %v", sp, pc)
	}
	if c := statusScope(t, st, tenantGoogle.Key()).Windows["1h"]; c.Counts["delivered"] != 20 || c.Counts["complained"] != 2 || c.Rates["complaint_rate"] != 0.1 {
		t.Errorf("/v1/status tenant acme at google: %+v", c)
	}
	tenantYahoo := reputation.Scope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_TENANT, Value: "acme", Provider: "yahoo"}
	if c := statusScope(t, st, tenantYahoo.Key()).Windows["1h"]; c.Counts["delivered"] != 10 || c.Counts["complained"] != 0 {
		t.Errorf("/v1/status tenant acme at yahoo: %+v", c)
	}
	if statusPolicy(t, st, tenantYahoo.Key()) != nil {
		t.Errorf("a policy for yahoo")
	}
	if len(st.Rules) != 1 || st.Rules[0].Name != "complaint-pause" || st.Rules[0].Above != 0.06 {
		t.Errorf("/v1/status rules %+v", st.Rules)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		v, ok := sample(t, mon, "mailwave_reputation_rate", rateLabels)
		return ok && v == 0.1
	}, "the complaint rate metric did not reach 0.1")
	if v, ok := sample(t, mon, "mailwave_reputation_policy_factor", map[string]string{"key": tenantGoogle.Key(), "action": "pause"}); !ok || v != 0 {
		t.Errorf("policy metric %v %v", v, ok)
	}
	if v, _ := sample(t, mon, "mailwave_reputation_decisions_total", map[string]string{"decided_by": "complaint-pause", "action": "pause"}); v != 1 {
		t.Errorf("%v pause decisions counted", v)
	}

	// New mail: Yahoo is delivered, Gmail is held at the sender.
	e.sendTo(t, "spike-2", "later1@gmail.com", "later1@yahoo.com", "later2@gmail.com", "later2@yahoo.com")
	testenv.Eventually(t, 20*time.Second, func() bool {
		snap := e.sim.Ledger().Snapshot()
		held, _ := sample(t, e.st.HTTP["sender"], "mailwave_sender_held_total", map[string]string{"provider": "google"})
		return len(snap.To("later1@yahoo.com")) == 1 && len(snap.To("later2@yahoo.com")) == 1 && held >= 2
	}, "yahoo not delivered or gmail not held")
	snap := e.sim.Ledger().Snapshot()
	if n := len(snap.To("later1@gmail.com")) + len(snap.To("later2@gmail.com")); n != 0 {
		t.Errorf("the paused provider received %d messages", n)
	}
}
