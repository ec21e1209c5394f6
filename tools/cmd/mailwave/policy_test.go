package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/reputation-monitor/reputation"
)

// policyWorld is a NATS server with the contract's streams and buckets, a
// subscription to the policy announcements, and a decider running the
// shipped rules against the same bucket, as the monitor does.
type policyWorld struct {
	url      string
	kv       jetstream.KeyValue
	announce chan *mailwavev1.PolicyChange
	decider  *reputation.Decider
}

func newPolicyWorld(t *testing.T) *policyWorld {
	t.Helper()
	ctx := testenv.Context(t)
	ns := testenv.NATS(t)
	nc, js := testenv.JetStream(t, ns)
	kv, err := js.KeyValue(ctx, mailwavev1.BucketPolicy)
	if err != nil {
		t.Fatal(err)
	}
	w := &policyWorld{url: ns.ClientURL(), kv: kv, announce: make(chan *mailwavev1.PolicyChange, 16)}
	sub, err := nc.Subscribe("mail.event.policy.>", func(m *nats.Msg) {
		pc := &mailwavev1.PolicyChange{}
		if err := proto.Unmarshal(m.Data, pc); err != nil {
			t.Errorf("announcement on %s: %v", m.Subject, err)
			return
		}
		w.announce <- pc
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	pol, err := reputation.LoadPolicy(reputation.DefaultPolicy())
	if err != nil {
		t.Fatal(err)
	}
	w.decider = reputation.NewDecider(kv, events.NewPublisher(js), pol, slog.New(slog.DiscardHandler), nil)
	if err := w.decider.Watch(ctx); err != nil {
		t.Fatal(err)
	}
	return w
}

// policy runs `mailwave policy ARGS --nats URL` and returns its output.
func (w *policyWorld) policy(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	args = append([]string{"policy"}, args...)
	args = append(args, "--nats", w.url)
	if err := run(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("mailwave %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// stored returns the policy of scope in the bucket.
func (w *policyWorld) stored(t *testing.T, sc reputation.Scope) *mailwavev1.PolicyChange {
	t.Helper()
	e, err := w.kv.Get(context.Background(), sc.Key())
	if err != nil {
		t.Fatalf("policy %s: %v", sc.Key(), err)
	}
	pc := &mailwavev1.PolicyChange{}
	if err := proto.Unmarshal(e.Value(), pc); err != nil {
		t.Fatal(err)
	}
	return pc
}

// announced waits for the announcement of the change with id.
func (w *policyWorld) announced(t *testing.T, id string) *mailwavev1.PolicyChange {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case pc := <-w.announce:
			if pc.GetId() == id {
				return pc
			}
		case <-timeout:
			t.Fatalf("change %s was not announced on mail.event.policy.>", id)
		}
	}
}

// mirrored waits until the decider's mirror holds the change with id.
func (w *policyWorld) mirrored(t *testing.T, sc reputation.Scope, id string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() bool {
		cur, _ := w.decider.Current(sc.Key())
		return cur.GetId() == id
	}, "the decider did not see change %s", id)
}

// changeID is the id `mailwave policy` prints after the key and verb.
func changeID(t *testing.T, out, key, verb string) string {
	t.Helper()
	f := strings.Fields(out)
	if len(f) != 3 || f[0] != key || f[1] != verb {
		t.Fatalf("output %q, want %q %q <id>", out, key, verb)
	}
	return f[2]
}

// A person's pause, resume and pinned rate are policy changes like the
// monitor's: stored in the bucket with a revision check, announced with
// the reason, decided by user:<name>, and they stand against the rules.
func TestPolicyCommandRecordsAPersonsDecision(t *testing.T) {
	w := newPolicyWorld(t)
	sc := reputation.Scope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_TENANT, Value: "acme", Provider: "google"}
	// Complaints the shipped rules pause for: 0.4 % over the last hour.
	spike := map[string]reputation.Counts{"1h": {reputation.Delivered: 5000, reputation.Complained: 20}}

	before := time.Now()
	id := changeID(t, w.policy(t, "pause", "--scope", "tenant=acme", "--provider", "google",
		"--reason", "complaints from the spring list", "--for", "90m", "--by", "ana"), sc.Key(), "pause")
	pc := w.stored(t, sc)
	if pc.GetId() != id || pc.GetAction() != mailwavev1.PolicyAction_POLICY_ACTION_PAUSE || pc.GetDecidedBy() != "user:ana" ||
		pc.GetReason() != "complaints from the spring list" || pc.GetScope().GetValue() != "acme" || pc.GetScope().GetProvider() != "google" {
		t.Fatalf("stored %v", pc)
	}
	if exp := pc.GetExpiresAt().AsTime(); exp.Before(before.Add(90*time.Minute)) || exp.After(time.Now().Add(90*time.Minute)) {
		t.Errorf("expires at %v, want 90m after the command", exp)
	}
	if a := w.announced(t, id); !proto.Equal(a, pc) {
		t.Errorf("announced %v, stored %v", a, pc)
	}

	// A resume stands for --for: the rules do not pause again meanwhile,
	// however high the complaint rate.
	id = changeID(t, w.policy(t, "resume", "--scope", "tenant=acme", "--provider", "google",
		"--reason", "list cleaned, sending again", "--by", "ana", "--for", "1h"), sc.Key(), "resume")
	w.announced(t, id)
	w.mirrored(t, sc, id)
	if got := w.stored(t, sc); got.GetAction() != mailwavev1.PolicyAction_POLICY_ACTION_RESUME || got.GetExpiresAt() == nil {
		t.Fatalf("stored %v", got)
	}
	if pc, err := w.decider.Decide(context.Background(), sc, spike, time.Now()); err != nil || pc != nil {
		t.Fatalf("the rules overrode a person's resume: %v %v", pc, err)
	}
	// A resume with --for 0 hands the scope back to the rules at once.
	id = changeID(t, w.policy(t, "resume", "--scope", "tenant=acme", "--provider", "google",
		"--reason", "back to the rules", "--by", "ana", "--for", "0"), sc.Key(), "resume")
	w.mirrored(t, sc, id)
	auto, err := w.decider.Decide(context.Background(), sc, spike, time.Now())
	if err != nil || auto.GetAction() != mailwavev1.PolicyAction_POLICY_ACTION_PAUSE || auto.GetDecidedBy() != "complaint-pause" {
		t.Fatalf("rules after a plain resume: %v %v", auto, err)
	}

	// A pinned rate replaces the monitor's pause and stands against it.
	id = changeID(t, w.policy(t, "pin", "--scope", "tenant=acme", "--provider", "google", "--rate", "500",
		"--reason", "warming back up", "--by", "ben"), sc.Key(), "pin")
	w.mirrored(t, sc, id)
	pin := w.stored(t, sc)
	if pin.GetAction() != mailwavev1.PolicyAction_POLICY_ACTION_PIN_RATE || pin.GetRatePerHour() != 500 || pin.GetDecidedBy() != "user:ben" {
		t.Fatalf("stored %v", pin)
	}
	if pc, err := w.decider.Decide(context.Background(), sc, spike, time.Now()); err != nil || pc != nil {
		t.Fatalf("the rules overrode a pinned rate: %v %v", pc, err)
	}

	// list shows what is in force, for a person and as JSON.
	ip := reputation.Scope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_SOURCE_IP, Value: "192.0.2.10"}
	changeID(t, w.policy(t, "pause", "--scope", "source_ip=192.0.2.10", "--reason", "listed in zen", "--by", "ben"), ip.Key(), "pause")
	text := w.policy(t, "list")
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "KEY") {
		t.Fatalf("list:\n%s", text)
	}
	for _, want := range [][]string{
		{ip.Key(), "pause", "user:ben", "listed in zen"},
		{sc.Key(), "pin_rate", "500/h", "user:ben", "warming back up"},
	} {
		found := false
		for _, l := range lines[1:] {
			ok := true
			for _, s := range want {
				ok = ok && strings.Contains(l, s)
			}
			found = found || ok
		}
		if !found {
			t.Errorf("list has no line with %q:\n%s", want, text)
		}
	}
	var rows []map[string]any
	for l := range strings.Lines(w.policy(t, "list", "--json")) {
		var row map[string]any
		if err := json.Unmarshal([]byte(l), &row); err != nil {
			t.Fatalf("list --json line %q: %v", l, err)
		}
		rows = append(rows, row)
	}
	if len(rows) != 2 || rows[0]["key"] != ip.Key() || rows[1]["key"] != sc.Key() ||
		rows[1]["action"] != "POLICY_ACTION_PIN_RATE" || rows[1]["decidedBy"] != "user:ben" || rows[1]["ratePerHour"] != 500.0 {
		t.Errorf("list --json: %v", rows)
	}
}

func TestPolicyCommandRejectsBadInput(t *testing.T) {
	// Each fails before connecting: the URL leads nowhere.
	for name, args := range map[string][]string{
		"no verb":        {"policy"},
		"unknown verb":   {"policy", "freeze", "--scope", "tenant=acme", "--reason", "x"},
		"no scope":       {"policy", "pause", "--reason", "x"},
		"unknown kind":   {"policy", "pause", "--scope", "planet=mars", "--reason", "x"},
		"empty value":    {"policy", "pause", "--scope", "tenant=", "--reason", "x"},
		"no reason":      {"policy", "pause", "--scope", "tenant=acme"},
		"pin no rate":    {"policy", "pin", "--scope", "tenant=acme", "--reason", "x"},
		"negative for":   {"policy", "pause", "--scope", "tenant=acme", "--reason", "x", "--for", "-1h"},
		"nobody decides": {"policy", "pause", "--scope", "tenant=acme", "--reason", "x", "--by", " "},
		"extra argument": {"policy", "pause", "--scope", "tenant=acme", "--reason", "x", "now"},
	} {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args = append(args, "--nats", "nats://127.0.0.1:1")
			err := run(context.Background(), args, &stdout, &stderr)
			if err == nil || strings.Contains(err.Error(), "127.0.0.1:1") {
				t.Errorf("run(%q) = %v, want an argument error", args, err)
			}
		})
	}
}
