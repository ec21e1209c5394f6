package e2e_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/reputation-monitor/reputation"
	"github.com/mailwave/mailwave/services/sender/sender"
	"github.com/mailwave/mailwave/tools/stack"
)

// writePolicy stores a reputation policy (rules, resume ladder,
// blocklists) for MW_POLICY_RULES and checks it loads.
func writePolicy(t *testing.T, yaml string) string {
	t.Helper()
	if _, err := reputation.LoadPolicy([]byte(yaml)); err != nil {
		t.Fatalf("test policy: %v", err)
	}
	p := filepath.Join(t.TempDir(), "reputation.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// feed records every policy change and alert published on EVENTS, in
// order, from a core NATS subscription opened before the test acts.
type feed struct {
	mu       sync.Mutex
	policies []*mailwavev1.PolicyChange
	alerts   []*mailwavev1.Alert
}

func watchFeed(t *testing.T, nc *nats.Conn) *feed {
	t.Helper()
	f := &feed{}
	for subject, decode := range map[string]func([]byte) error{
		"mail.event.policy.>": func(b []byte) error {
			pc := &mailwavev1.PolicyChange{}
			if err := proto.Unmarshal(b, pc); err != nil {
				return err
			}
			f.mu.Lock()
			f.policies = append(f.policies, pc)
			f.mu.Unlock()
			return nil
		},
		"mail.event.alert.>": func(b []byte) error {
			a := &mailwavev1.Alert{}
			if err := proto.Unmarshal(b, a); err != nil {
				return err
			}
			f.mu.Lock()
			f.alerts = append(f.alerts, a)
			f.mu.Unlock()
			return nil
		},
	} {
		sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
			if err := decode(m.Data); err != nil {
				t.Errorf("%s: %v", m.Subject, err)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return f
}

// changesOf returns the announced changes of one policy key, in order.
func (f *feed) changesOf(key string) []*mailwavev1.PolicyChange {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*mailwavev1.PolicyChange
	for _, pc := range f.policies {
		if mailwavev1.PolicyKey(pc.GetScope()) == key {
			out = append(out, pc)
		}
	}
	return out
}

// waitChange waits for an announced change of key that satisfies match.
func (f *feed) waitChange(t *testing.T, key string, timeout time.Duration, what string, match func(*mailwavev1.PolicyChange) bool) *mailwavev1.PolicyChange {
	t.Helper()
	var got *mailwavev1.PolicyChange
	testenv.Eventually(t, timeout, func() bool {
		for _, pc := range f.changesOf(key) {
			if match(pc) {
				got = pc
				return true
			}
		}
		return false
	}, "no %s announced for %s; announced: %s", what, key, describe(f.changesOf(key)))
	return got
}

// waitAlert waits for an alert called name about target.
func (f *feed) waitAlert(t *testing.T, name, target string) *mailwavev1.Alert {
	t.Helper()
	var got *mailwavev1.Alert
	testenv.Eventually(t, 10*time.Second, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, a := range f.alerts {
			if a.GetName() == name && a.GetTarget() == target {
				got = a
				return true
			}
		}
		return false
	}, "no %s alert for %s", name, target)
	return got
}

func (f *feed) alertNames() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, a := range f.alerts {
		out = append(out, a.GetName()+" "+a.GetTarget())
	}
	return out
}

// step is a policy's action and rate factor, the part a sequence checks.
type step struct {
	action mailwavev1.PolicyAction
	factor float64
}

func stepsOf(pcs []*mailwavev1.PolicyChange) []step {
	out := make([]step, 0, len(pcs))
	for _, pc := range pcs {
		out = append(out, step{pc.GetAction(), pc.GetRateFactor()})
	}
	return out
}

func describe(pcs []*mailwavev1.PolicyChange) string {
	var b strings.Builder
	for _, pc := range pcs {
		fmt.Fprintf(&b, "\n  %s %g by %s: %s", strings.TrimPrefix(pc.GetAction().String(), "POLICY_ACTION_"),
			pc.GetRateFactor(), pc.GetDecidedBy(), pc.GetReason())
	}
	return b.String()
}

var labelRE = regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)

// sample returns the value of the Prometheus sample name{labels} served
// at addr (host:port), whatever the order of its labels; ok is false when
// there is none.
func sample(t *testing.T, addr, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		head, value, _ := strings.Cut(line, " ")
		got := map[string]string{}
		if i := strings.IndexByte(head, '{'); i >= 0 {
			if head[:i] != name {
				continue
			}
			for _, m := range labelRE.FindAllStringSubmatch(head[i:], -1) {
				got[m[1]] = m[2]
			}
		}
		match := true
		for k, v := range labels {
			match = match && got[k] == v
		}
		if match && len(got) == len(labels) {
			v, err := strconv.ParseFloat(strings.Fields(value)[0], 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return v, true
		}
	}
	return 0, false
}

// counted is how many events of counter the monitor at addr has counted.
func counted(t *testing.T, addr, counter string) float64 {
	t.Helper()
	v, _ := sample(t, addr, "mailwave_reputation_events_total", map[string]string{"counter": counter})
	return v
}

// waitCounted waits until the monitor at addr has counted want events of
// each counter: the events before it are in the windows.
func waitCounted(t *testing.T, addr string, want map[string]int) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, func() bool {
		for c, n := range want {
			if counted(t, addr, c) != float64(n) {
				return false
			}
		}
		return true
	}, "the monitor did not count %v", want)
}

// status reads the monitor's /v1/status.
func status(t *testing.T, addr string) reputation.Status {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("/v1/status: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	var st reputation.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// statusPolicy returns the policy /v1/status shows for key, nil if none.
func statusPolicy(t *testing.T, st reputation.Status, key string) *mailwavev1.PolicyChange {
	t.Helper()
	raw, ok := st.Policies[key]
	if !ok {
		return nil
	}
	pc := &mailwavev1.PolicyChange{}
	if err := protojson.Unmarshal(raw, pc); err != nil {
		t.Fatalf("status policy %s: %v", key, err)
	}
	return pc
}

// statusScope returns the scope /v1/status shows with the given key.
func statusScope(t *testing.T, st reputation.Status, key string) reputation.ScopeStatus {
	t.Helper()
	for _, s := range st.Scopes {
		if s.Key == key {
			return s
		}
	}
	t.Fatalf("/v1/status has no scope %s", key)
	return reputation.ScopeStatus{}
}

// complaintOf is the complaint fbl-parser publishes when a feedback report
// names the delivered message ev: mail.event.complained.<tenant>, origin
// FBL, carrying the source IP, provider and sending domain of the message.
// The reputation tests publish it themselves so they do not depend on the
// feedback loop's timing; fbl-parser's own tests cover how reports become
// these events.
func complaintOf(ev *mailwavev1.DeliveryEvent) *mailwavev1.DeliveryEvent {
	return &mailwavev1.DeliveryEvent{
		EventId: "complained-" + ev.GetMessageId(), Kind: mailwavev1.EventKind_EVENT_KIND_COMPLAINED,
		Origin: mailwavev1.Origin_ORIGIN_FBL, MessageId: ev.GetMessageId(), RequestId: ev.GetRequestId(),
		Tenant: ev.GetTenant(), Brand: ev.GetBrand(), MailStream: ev.GetMailStream(), CampaignId: ev.GetCampaignId(),
		Recipient: ev.GetRecipient(), Reason: "complaint", SourceIp: ev.GetSourceIp(),
		SendingDomain: ev.GetSendingDomain(), Provider: ev.GetProvider(), Pool: ev.GetPool(),
		OccurredAt: timestamppb.Now(), Detail: "feedback report (abuse) via imap",
		Metadata: map[string]string{"feedback_type": "abuse"},
	}
}

func (e *env) publishEvent(t *testing.T, ev *mailwavev1.DeliveryEvent) {
	t.Helper()
	if _, err := events.NewPublisher(e.js).Publish(testenv.Context(t), mailwavev1.SubjectEvent(ev.GetKind(), ev.GetTenant()), ev,
		events.WithMsgID(ev.GetEventId())); err != nil {
		t.Fatal(err)
	}
}

// sendTo publishes one request of tenant acme to rcpts.
func (e *env) sendTo(t *testing.T, key string, rcpts ...string) {
	t.Helper()
	req := &mailwavev1.SendRequest{IdempotencyKey: key, Tenant: "acme", Brand: "shop",
		Content: &mailwavev1.SendRequest_Template{Template: &mailwavev1.Template{
			From: "Shop <news@mailwave.test>", Subject: "News", Text: "hello"}}}
	for _, r := range rcpts {
		req.Recipients = append(req.Recipients, &mailwavev1.Recipient{Address: r})
	}
	if _, err := e.cl.Send(testenv.Context(t), req); err != nil {
		t.Fatal(err)
	}
}

// addresses returns n addresses prefix1@domain … prefixN@domain.
func addresses(prefix, domain string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d@%s", prefix, i+1, domain)
	}
	return out
}

// senderPolicies is how many policies the sender mirrors.
func (e *env) senderPolicies(t *testing.T) float64 {
	t.Helper()
	v, _ := sample(t, e.st.HTTP["sender"], "mailwave_sender_policies", nil)
	return v
}

// senderCaughtUp waits until the sender's mirror of the policy bucket has
// applied every change written so far: it writes a marker policy for a
// tenant nobody sends for and waits for the sender to count it (the watch
// delivers in order), then removes it again.
func (e *env) senderCaughtUp(t *testing.T) {
	t.Helper()
	ctx := testenv.Context(t)
	kv, err := e.js.KeyValue(ctx, mailwavev1.BucketPolicy)
	if err != nil {
		t.Fatal(err)
	}
	n := e.senderPolicies(t)
	scope := &mailwavev1.PolicyScope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_TENANT, Value: "marker-" + events.NewID()}
	b, _ := proto.Marshal(&mailwavev1.PolicyChange{Id: events.NewID(), Scope: scope,
		Action: mailwavev1.PolicyAction_POLICY_ACTION_RESUME, Reason: "test marker", DecidedBy: "test", CreatedAt: timestamppb.Now()})
	if _, err := kv.Put(ctx, mailwavev1.PolicyKey(scope), b); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return e.senderPolicies(t) == n+1 }, "the sender did not see the marker")
	if err := kv.Purge(ctx, mailwavev1.PolicyKey(scope)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return e.senderPolicies(t) == n }, "the sender did not drop the marker")
}

// fastShaping lifts the shipped per-provider limits for the simulated
// providers: the reputation tests measure the monitor, not the pace the
// shipped limits keep toward a new IP.
const fastShaping = `
providers:
  google: {max_connections: 10, messages_per_second: 400, messages_per_minute: 20000, messages_per_hour: 100000, connections_per_minute: 600}
  yahoo: {max_connections: 10, messages_per_second: 400, messages_per_minute: 20000, messages_per_hour: 100000, connections_per_minute: 600}
  microsoft: {max_connections: 10, messages_per_second: 400, messages_per_minute: 20000, messages_per_hour: 100000, connections_per_minute: 600}
  default: {max_connections: 10, messages_per_second: 400, messages_per_minute: 20000, messages_per_hour: 100000, connections_per_minute: 600}
`

// reputationStack tunes a stack for the reputation tests: the monitor
// runs the given policy (adjusted by tune), the sender the fast shaping.
func reputationStack(t *testing.T, policy string, tune func(*reputation.Config), more func(*stack.Options)) func(*stack.Options) {
	t.Helper()
	pol := ""
	if policy != "" {
		pol = writePolicy(t, policy)
	}
	shape := filepath.Join(t.TempDir(), "shaping.yaml")
	if err := os.WriteFile(shape, []byte(fastShaping), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(o *stack.Options) {
		o.TuneReputation = func(c *reputation.Config) {
			c.PolicyFile = pol
			if tune != nil {
				tune(c)
			}
		}
		o.TuneSender = func(c *sender.Config) { c.ShapingFile = shape }
		if more != nil {
			more(o)
		}
	}
}
