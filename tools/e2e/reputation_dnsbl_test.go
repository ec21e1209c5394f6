package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/reputation-monitor/reputation"
	"github.com/mailwave/mailwave/tools/stack"
)

// listingPolicy checks the simulator's IP blocklists and climbs back from
// a pause in one-second steps.
const listingPolicy = `
resume: {steps: [0.25, 0.5], step_for: 1s}
rules: []
blocklists:
  - zone: zen.spamhaus.org
    kind: ip
    codes:
      127.0.0.2: "SBL: direct spam source"
      127.0.0.4: "XBL: exploited host (CBL)"
  - zone: b.barracudacentral.org
    kind: ip
    codes:
      127.0.0.2: "Barracuda: poor reputation"
`

// A blocklist listing of a source IP pauses that IP everywhere; its mail
// leaves from the pool's other IP; once delisted it climbs the resume
// ladder back to full traffic. A "query refused" answer lists nothing.
// Every step is a policy change with its reason and evidence, the listing
// and delisting are alerts, and /v1/status shows the listings.
func TestBlocklistListingMovesTrafficOffTheIPAndDelistingResumesIt(t *testing.T) {
	const zen = "zen.spamhaus.org"
	listed, other := netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.4")
	e := startWith(t, nil, reputationStack(t, listingPolicy, func(c *reputation.Config) {
		c.DNSBLInterval = 100 * time.Millisecond
		c.ListingPause = time.Hour
	}, func(o *stack.Options) {
		o.SourceIPs = []string{listed.String(), other.String()}
		o.HeloNames = []string{"mta2.mailwave.test", "mta3.mailwave.test"}
	}))
	ctx := testenv.Context(t)
	mon := e.st.HTTP["reputation-monitor"]
	f := watchFeed(t, e.nc)
	kv, err := e.js.KeyValue(ctx, mailwavev1.BucketPolicy)
	if err != nil {
		t.Fatal(err)
	}
	ipKey := reputation.Scope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_SOURCE_IP, Value: listed.String()}.Key()

	// The list refuses the query (127.255.255.254, as Spamhaus answers
	// public resolvers): that says nothing about the IPs, so nothing is
	// listed or paused. Two rounds over both IPs are waited for.
	if err := e.sim.DNS().SetRefused(zen, "127.255.255.254"); err != nil {
		t.Fatal(err)
	}
	refused := map[string]string{"zone": zen, "kind": "refused"}
	testenv.Eventually(t, 10*time.Second, func() bool {
		v, _ := sample(t, mon, "mailwave_reputation_dnsbl_errors_total", refused)
		return v >= 4
	}, "the monitor did not look the IPs up in the refusing zone")
	if keys, err := kv.ListKeys(ctx); err == nil {
		for k := range keys.Keys() {
			t.Errorf("a policy after refused answers: %s", k)
		}
	}
	if st := status(t, mon); len(st.Listings) != 0 {
		t.Errorf("listings after refused answers: %v", st.Listings)
	}
	if _, ok := sample(t, mon, "mailwave_reputation_dnsbl_listed", map[string]string{"zone": zen, "target": listed.String()}); ok {
		t.Error("listed metric after refused answers")
	}
	if err := e.sim.DNS().SetRefused(zen, ""); err != nil {
		t.Fatal(err)
	}

	// Listed: the IP is paused everywhere and the sender moves its mail.
	if err := e.sim.DNS().ListIP(zen, listed, "127.0.0.2"); err != nil {
		t.Fatal(err)
	}
	pause := f.waitChange(t, ipKey, 10*time.Second, "pause", func(pc *mailwavev1.PolicyChange) bool {
		return pc.GetAction() == mailwavev1.PolicyAction_POLICY_ACTION_PAUSE
	})
	if pause.GetDecidedBy() != "dnsbl:"+zen || !strings.Contains(pause.GetReason(), "listed in "+zen) ||
		pause.GetEvidence()["code"] != "127.0.0.2" || pause.GetEvidence()["meaning"] != "SBL: direct spam source" ||
		pause.GetScope().GetProvider() != "" {
		t.Fatalf("pause %v", pause)
	}
	if a := f.waitAlert(t, "dnsbl_listed", listed.String()); a.GetSeverity() != "critical" || a.GetEvidence()["zone"] != zen {
		t.Errorf("alert %v", a)
	}
	if st := status(t, mon); st.Listings[zen+" "+listed.String()] != "127.0.0.2" {
		t.Errorf("/v1/status listings %v", st.Listings)
	}
	listedLabels := map[string]string{"zone": zen, "target": listed.String()}
	if v, ok := sample(t, mon, "mailwave_reputation_dnsbl_listed", listedLabels); !ok || v != 1 {
		t.Errorf("listed metric %v %v", v, ok)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return e.senderPolicies(t) == 1 }, "the sender did not mirror the pause")
	rcpts := []string{"ann@gmail.com", "bob@yahoo.com", "cid@outlook.com", "dee@gmail.com", "eve@yahoo.com",
		"fay@brightworks.example", "gus@gmail.com", "hal@yahoo.com"}
	e.sendTo(t, "listed-1", rcpts...)
	for rcpt, ev := range e.terminal(t, "acme", "listed-1", len(rcpts)) {
		if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED || ev.GetSourceIp() != other.String() {
			t.Errorf("%s: %v from %s, want delivered from %s", rcpt, ev.GetKind(), ev.GetSourceIp(), other)
		}
	}
	if n := len(e.sim.Ledger().Snapshot().Accepted("", listed)); n != 0 {
		t.Errorf("%d messages left from the listed IP", n)
	}

	// Delisted: throttle at 0.25, then 0.5, then resume, one second each.
	if err := e.sim.DNS().Delist(zen, listed.String()); err != nil {
		t.Fatal(err)
	}
	f.waitChange(t, ipKey, 15*time.Second, "resume", func(pc *mailwavev1.PolicyChange) bool {
		return pc.GetAction() == mailwavev1.PolicyAction_POLICY_ACTION_RESUME
	})
	changes := f.changesOf(ipKey)
	want := []step{{mailwavev1.PolicyAction_POLICY_ACTION_PAUSE, 0}, {mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE, 0.25},
		{mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE, 0.5}, {mailwavev1.PolicyAction_POLICY_ACTION_RESUME, 0}}
	if !slices.Equal(stepsOf(changes), want) {
		t.Fatalf("changes of %s:%s", ipKey, describe(changes))
	}
	if first := changes[1]; !strings.Contains(first.GetReason(), "delisted from "+zen) || first.GetDecidedBy() != "resume" ||
		first.GetEvidence()["previous_decided_by"] != "dnsbl:"+zen {
		t.Errorf("first step back %v", first)
	}
	for i := 2; i < len(changes); i++ {
		if gap := changes[i].GetCreatedAt().AsTime().Sub(changes[i-1].GetCreatedAt().AsTime()); gap < time.Second {
			t.Errorf("step %d came %v after the one before, want the ladder's 1s", i, gap)
		}
	}
	f.waitAlert(t, "dnsbl_delisted", listed.String())
	if st := status(t, mon); len(st.Listings) != 0 {
		t.Errorf("/v1/status listings after delisting %v", st.Listings)
	}
	if _, ok := sample(t, mon, "mailwave_reputation_dnsbl_listed", listedLabels); ok {
		t.Error("listed metric after delisting")
	}

	// Back at full traffic: the recipients routed to the IP leave from it
	// again.
	e.senderCaughtUp(t)
	e.sendTo(t, "delisted-1", addresses("back", "gmail.com", 8)...)
	var again int
	for rcpt, ev := range e.terminal(t, "acme", "delisted-1", 8) {
		if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED {
			t.Errorf("%s: %v", rcpt, ev.GetKind())
		}
		if ev.GetSourceIp() == listed.String() {
			again++
		}
	}
	if again == 0 {
		t.Error("no message left from the delisted IP")
	}

	// An audit on demand, stored and shown on /v1/status. It fails in the
	// simulator's world, which raises an alert: no DKIM selector is
	// configured, the DMARC record is p=none, and 127.0.0.4 has no PTR
	// record (127.0.0.3 has, naming its EHLO name).
	resp, err := http.Post("http://"+mon+"/v1/audit?domain=mailwave.test", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var body json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var audit mailwavev1.AuthAudit
	if err := protojson.Unmarshal(body, &audit); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/v1/audit: %s %s %v", resp.Status, body, err)
	}
	problems := map[string]string{}
	var names []string
	for _, c := range audit.GetChecks() {
		names = append(names, c.GetName())
		problems[c.GetName()] = strings.Join(c.GetProblems(), "; ")
	}
	if audit.GetOk() || !slices.Equal(names, []string{"spf", "dkim", "dmarc", "ptr", "mx"}) ||
		!strings.Contains(problems["dkim"], "no DKIM selector") || !strings.Contains(problems["dmarc"], "p=none") ||
		!strings.Contains(problems["ptr"], "127.0.0.4 has no PTR record") || strings.Contains(problems["ptr"], "127.0.0.3") {
		t.Errorf("audit of mailwave.test: %v", &audit)
	}
	f.waitAlert(t, "audit_failed", "mailwave.test")
	if v, ok := sample(t, mon, "mailwave_reputation_audit_ok", map[string]string{"domain": "mailwave.test"}); !ok || v != 0 {
		t.Errorf("audit metric %v %v", v, ok)
	}
	if _, ok := status(t, mon).Audits["mailwave.test"]; !ok {
		t.Error("/v1/status shows no audit of mailwave.test")
	}
	akv, err := e.js.KeyValue(ctx, mailwavev1.BucketAudits)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := akv.Get(context.WithoutCancel(ctx), mailwavev1.KeyToken("mailwave.test")); errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Error("the audit was not stored")
	}
}
