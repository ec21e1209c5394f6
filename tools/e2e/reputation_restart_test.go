package e2e_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/reputation-monitor/reputation"
	"github.com/mailwave/mailwave/tools/stack"
)

// runMonitor runs a reputation monitor against the stack's NATS and Redis
// until the returned stop is called, and returns its HTTP address.
func runMonitor(t *testing.T, e *env, policyFile string) (addr string, stop func()) {
	t.Helper()
	cfg := reputation.Config{
		Common: service.Common{NATSURL: e.st.NATSURL, RedisURL: e.st.RedisURL, HTTPAddr: "127.0.0.1:0", LogLevel: "info",
			Replicas: 1, DrainTimeout: 20 * time.Second},
		PolicyFile: policyFile, DNSServer: e.sim.DNSAddr(), SourceIPs: []string{"127.0.0.3"},
		HeloNames: []string{"mta2.mailwave.test"}, DNSBLInterval: time.Hour, AuditInterval: time.Hour,
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	listening := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- reputation.Run(ctx, cfg, slog.New(slog.DiscardHandler), service.Options{OnListen: func(a net.Addr) { listening <- a }})
	}()
	select {
	case a := <-listening:
		addr = a.String()
	case err := <-done:
		cancel()
		t.Fatalf("the monitor did not start: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("the monitor did not start in 30s")
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("monitor: %v", err)
		}
	}
	t.Cleanup(stop)
	return addr, stop
}

// The monitor restarts mid-run and loses nothing: the windows it counted
// before are in Redis and count toward the decision after, the policy it
// decided before is in the bucket and stands, the events published while
// it was down are counted once, none twice.
func TestMonitorRestartKeepsWindowsAndPolicies(t *testing.T) {
	pol := writePolicy(t, `
resume: {steps: [0.25, 0.5], step_for: 30m}
rules:
  - name: complaint-pause
    rate: complaint_rate
    scopes: [tenant@provider]
    window: 1h
    min_volume: 10
    above: 0.15
    action: pause
    for: 1h
blocklists: []
`)
	e := startWith(t, nil, reputationStack(t, "", nil,
		func(o *stack.Options) { o.NoReputation = true }))
	ctx := testenv.Context(t)
	f := watchFeed(t, e.nc)
	kv, err := e.js.KeyValue(ctx, mailwavev1.BucketPolicy)
	if err != nil {
		t.Fatal(err)
	}
	tenantAt := func(p string) reputation.Scope {
		return reputation.Scope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_TENANT, Value: "acme", Provider: p}
	}
	google, yahoo := tenantAt("google"), tenantAt("yahoo")

	first, stopFirst := runMonitor(t, e, pol)
	gmail, ymail := addresses("r", "gmail.com", 10), addresses("r", "yahoo.com", 10)
	e.sendTo(t, "restart-1", append(gmail, ymail...)...)
	evs := e.terminal(t, "acme", "restart-1", 20)
	// Yahoo: 2 complaints in 10, over 15 %: the first run pauses it.
	// Google: 1 in 10, under.
	for _, r := range []string{ymail[0], ymail[1], gmail[0]} {
		e.publishEvent(t, complaintOf(evs[r]))
	}
	waitCounted(t, first, map[string]int{"delivered": 20, "complained": 3})
	paused := f.waitChange(t, yahoo.Key(), 10*time.Second, "pause", func(pc *mailwavev1.PolicyChange) bool {
		return pc.GetAction() == mailwavev1.PolicyAction_POLICY_ACTION_PAUSE
	})
	before, err := kv.Get(ctx, yahoo.Key())
	if err != nil {
		t.Fatal(err)
	}
	stopFirst()

	// While it is down, the complaint that crosses Google's threshold.
	e.publishEvent(t, complaintOf(evs[gmail[1]]))

	second, _ := runMonitor(t, e, pol)
	// The policy decided before the restart is there and stands.
	st := status(t, second)
	if sp := statusPolicy(t, st, yahoo.Key()); !proto.Equal(sp, paused) {
		t.Errorf("after the restart /v1/status shows %v for yahoo, want %v", sp, paused)
	}
	// The second run counts the event published while it was down, on top
	// of the windows the first run counted, and pauses Google.
	f.waitChange(t, google.Key(), 10*time.Second, "pause", func(pc *mailwavev1.PolicyChange) bool {
		ev := pc.GetEvidence()
		return pc.GetAction() == mailwavev1.PolicyAction_POLICY_ACTION_PAUSE && ev["delivered"] == "10" && ev["complained"] == "2"
	})
	waitCounted(t, second, map[string]int{"complained": 1})
	if n := counted(t, second, "delivered"); n != 0 {
		t.Errorf("the second run counted %v deliveries again", n)
	}
	st = status(t, second)
	for sc, want := range map[reputation.Scope][2]int64{google: {10, 2}, yahoo: {10, 2}} {
		c := statusScope(t, st, sc.Key()).Windows["1h"]
		if c.Counts["delivered"] != want[0] || c.Counts["complained"] != want[1] {
			t.Errorf("%s after the restart: %v, want %d delivered and %d complained", sc, c.Counts, want[0], want[1])
		}
	}
	after, err := kv.Get(ctx, yahoo.Key())
	if err != nil {
		t.Fatal(err)
	}
	if after.Revision() != before.Revision() {
		t.Errorf("the second run rewrote yahoo's pause: revision %d → %d", before.Revision(), after.Revision())
	}
	if n := len(f.changesOf(yahoo.Key())); n != 1 {
		t.Errorf("%d changes announced for yahoo, want 1:%s", n, describe(f.changesOf(yahoo.Key())))
	}
}
