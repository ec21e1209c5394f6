package e2e_test

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/tools/stack"
)

// metric returns the value of a Prometheus sample of a service, 0 when
// absent.
func (e *env) metric(t *testing.T, svc string, re *regexp.Regexp) float64 {
	t.Helper()
	resp, err := http.Get("http://" + e.st.HTTP[svc] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := re.FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

var policiesMetric = regexp.MustCompile(`(?m)^mailwave_sender_policies (\S+)`)

// waitPolicies waits until a sender replica mirrors n policies: its KV
// watch has seen what the test wrote.
func (e *env) waitPolicies(t *testing.T, svc string, n int) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() bool {
		return e.metric(t, svc, policiesMetric) == float64(n)
	}, "the sender did not mirror the policies")
}

// A paused source IP (a blocklist listing) sends nothing, and its mail
// leaves from the pool's other IP instead of waiting.
func TestPausedSourceIPFallsBackToThePoolsOtherIP(t *testing.T) {
	e := startWith(t, nil, func(o *stack.Options) {
		o.SourceIPs = []string{"127.0.0.3", "127.0.0.4"}
		o.HeloNames = []string{"mta2.mailwave.test", "mta3.mailwave.test"}
	})
	ctx := testenv.Context(t)
	kv, err := e.js.KeyValue(ctx, mailwavev1.BucketPolicy)
	if err != nil {
		t.Fatal(err)
	}
	scope := &mailwavev1.PolicyScope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_SOURCE_IP, Value: "127.0.0.3"}
	pause, _ := proto.Marshal(&mailwavev1.PolicyChange{
		Id: "ip1", Scope: scope, Action: mailwavev1.PolicyAction_POLICY_ACTION_PAUSE, Reason: "listed in zen.spamhaus.org",
		DecidedBy: "test", CreatedAt: timestamppb.Now(), ExpiresAt: timestamppb.New(time.Now().Add(time.Hour)),
	})
	if _, err := kv.Put(ctx, mailwavev1.PolicyKey(scope), pause); err != nil {
		t.Fatal(err)
	}
	e.waitPolicies(t, "sender", 1)
	var rcpts []*mailwavev1.Recipient
	for _, a := range []string{"a@gmail.com", "b@yahoo.com", "c@outlook.com", "d@gmail.com", "e@yahoo.com", "f@smallshop.example"} {
		rcpts = append(rcpts, &mailwavev1.Recipient{Address: a})
	}
	if _, err := e.cl.Send(ctx, &mailwavev1.SendRequest{
		IdempotencyKey: "fallback-1", Tenant: "acme", Brand: "shop", Recipients: rcpts,
		Content: &mailwavev1.SendRequest_Template{Template: &mailwavev1.Template{
			From: "Shop <news@mailwave.test>", Subject: "Hi", Text: "hello"}},
	}); err != nil {
		t.Fatal(err)
	}
	evs := e.terminal(t, "acme", "fallback-1", len(rcpts))
	for rcpt, ev := range evs {
		if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED || ev.GetSourceIp() != "127.0.0.4" {
			t.Errorf("%s: %v from %s, want delivered from 127.0.0.4", rcpt, ev.GetKind(), ev.GetSourceIp())
		}
	}
	for _, m := range e.sim.Ledger().Snapshot().Messages {
		if m.SourceIP.String() != "127.0.0.4" || m.EHLO != "mta3.mailwave.test" {
			t.Errorf("%v arrived from %s as %s", m.Rcpts, m.SourceIP, m.EHLO)
		}
	}
}

func TestPauseHoldsOneProviderAndResumesWithoutLoss(t *testing.T) {
	e := start(t)
	ctx := testenv.Context(t)
	kv, err := e.js.KeyValue(ctx, mailwavev1.BucketPolicy)
	if err != nil {
		t.Fatal(err)
	}
	scope := &mailwavev1.PolicyScope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_TENANT, Value: "acme", Provider: "google"}
	pause, _ := proto.Marshal(&mailwavev1.PolicyChange{
		Id: "p1", Scope: scope, Action: mailwavev1.PolicyAction_POLICY_ACTION_PAUSE, Reason: "complaint rate 0.4% > 0.3%",
		DecidedBy: "test", CreatedAt: timestamppb.Now(), ExpiresAt: timestamppb.New(time.Now().Add(time.Hour)),
	})
	if _, err := kv.Put(ctx, mailwavev1.PolicyKey(scope), pause); err != nil {
		t.Fatal(err)
	}
	e.waitPolicies(t, "sender", 1)
	held := regexp.MustCompile(`mailwave_sender_held_total\{provider="google"\} (\d+)`)
	req := &mailwavev1.SendRequest{
		IdempotencyKey: "pause-1", Tenant: "acme", Brand: "shop",
		Recipients: []*mailwavev1.Recipient{{Address: "a@gmail.com"}, {Address: "b@brightworks.example"}, {Address: "c@yahoo.com"}},
		Content: &mailwavev1.SendRequest_Template{Template: &mailwavev1.Template{
			From: "Shop <news@mailwave.test>", Subject: "Hi", Text: "hello"}},
	}
	// The pause reaches the sender through its KV watch: wait until a
	// message is held rather than assuming it already arrived.
	if _, err := e.cl.Send(ctx, req); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, func() bool {
		snap := e.sim.Ledger().Snapshot()
		return len(snap.To("c@yahoo.com")) == 1 && e.metric(t, "sender", held) >= 2
	}, "yahoo not delivered or google not held")
	snap := e.sim.Ledger().Snapshot()
	if n := len(snap.To("a@gmail.com")) + len(snap.To("b@brightworks.example")); n != 0 {
		t.Fatalf("paused provider received %d messages", n)
	}
	// Resume: delete the policy; the held messages go out, once each.
	if err := kv.Delete(ctx, mailwavev1.PolicyKey(scope)); err != nil {
		t.Fatal(err)
	}
	evs := e.terminal(t, "acme", "pause-1", 3)
	for rcpt, ev := range evs {
		if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED {
			t.Errorf("%s: %v", rcpt, ev.GetKind())
		}
	}
	snap = e.sim.Ledger().Snapshot()
	if len(snap.To("a@gmail.com")) != 1 || len(snap.To("b@brightworks.example")) != 1 {
		t.Errorf("after resume: %d and %d copies", len(snap.To("a@gmail.com")), len(snap.To("b@brightworks.example")))
	}
}
