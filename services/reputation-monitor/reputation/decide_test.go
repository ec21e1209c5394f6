package reputation_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/reputation-monitor/reputation"
)

func policyBucket(t *testing.T) (context.Context, jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	ctx := testenv.Context(t)
	_, js := testenv.JetStream(t, testenv.NATS(t))
	kv, err := js.KeyValue(ctx, mailwavev1.BucketPolicy)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, js, kv
}

// Two replicas that reach the same verdict write it once, and neither
// undoes the other.
func TestReplicasDecideOnce(t *testing.T) {
	ctx, js, kv := policyBucket(t)
	p := defaultPolicy(t)
	var ds []*reputation.Decider
	for range 2 {
		d := reputation.NewDecider(kv, events.NewPublisher(js), p, slog.New(slog.DiscardHandler), nil)
		if err := d.Watch(ctx); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	w := win("1h", reputation.Counts{reputation.Delivered: 5000, reputation.Complained: 20})
	var wg sync.WaitGroup
	written := make(chan *mailwavev1.PolicyChange, 2)
	for _, d := range ds {
		wg.Go(func() {
			pc, err := d.Decide(ctx, tenantG, w, t0)
			if err != nil {
				t.Error(err)
			}
			if pc != nil {
				written <- pc
			}
		})
	}
	wg.Wait()
	close(written)
	if n := len(written); n != 1 {
		t.Fatalf("%d writes, want 1", n)
	}
	e, err := kv.Get(ctx, tenantG.Key())
	if err != nil {
		t.Fatal(err)
	}
	if e.Revision() != 1 {
		// The loser must not have overwritten.
		h, _ := kv.History(ctx, tenantG.Key())
		t.Fatalf("revision %d, history %d", e.Revision(), len(h))
	}
	stream, _ := js.Stream(ctx, mailwavev1.StreamEvents)
	info, _ := stream.Info(ctx, jetstream.WithSubjectFilter(mailwavev1.SubjectPolicyEvent(mailwavev1.ScopeKind_SCOPE_KIND_TENANT)))
	if info.State.Msgs != 1 {
		t.Errorf("%d policy events, want 1", info.State.Msgs)
	}
}

// A lapsed pause climbs the ladder: throttle 0.25, 0.5, then resume; a
// person's live pause is never replaced by the rules.
func TestLadderAndUserOverride(t *testing.T) {
	ctx, js, kv := policyBucket(t)
	p := defaultPolicy(t)
	d := reputation.NewDecider(kv, events.NewPublisher(js), p, slog.New(slog.DiscardHandler), nil)
	if err := d.Watch(ctx); err != nil {
		t.Fatal(err)
	}
	pc := reputation.NewChange(tenantG, pause, 0, "test", "complaint-pause", nil, t0, time.Hour)
	if err := d.Write(ctx, pc, 0); err != nil {
		t.Fatal(err)
	}
	get := func() *mailwavev1.PolicyChange {
		e, err := kv.Get(ctx, tenantG.Key())
		if err != nil {
			t.Fatal(err)
		}
		out := &mailwavev1.PolicyChange{}
		if err := proto.Unmarshal(e.Value(), out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	now := t0.Add(30 * time.Minute)
	if ch, _ := d.Ladder(ctx, now); len(ch) != 0 {
		t.Fatalf("live pause climbed: %v", ch)
	}
	want := []struct {
		action mailwavev1.PolicyAction
		factor float64
	}{{throttle, 0.25}, {throttle, 0.5}, {resume, 0}}
	for _, w := range want {
		now = now.Add(time.Hour)
		testenv.Eventually(t, 5*time.Second, func() bool {
			cur, _ := d.Current(tenantG.Key())
			return !proto.Equal(cur, nil) && cur.GetExpiresAt() != nil && !cur.GetExpiresAt().AsTime().After(now)
		}, "mirror did not catch up")
		if _, err := d.Ladder(ctx, now); err != nil {
			t.Fatal(err)
		}
		got := get()
		if got.GetAction() != w.action || got.GetRateFactor() != w.factor || got.GetDecidedBy() != "resume" {
			t.Fatalf("got %v %g by %s, want %v %g", got.GetAction(), got.GetRateFactor(), got.GetDecidedBy(), w.action, w.factor)
		}
	}
	// A person's pause stands against the rules.
	testenv.Eventually(t, 5*time.Second, func() bool {
		cur, _ := d.Current(tenantG.Key())
		return cur.GetAction() == resume
	}, "mirror did not see the resume")
	_, rev := d.Current(tenantG.Key())
	user := reputation.NewChange(tenantG, throttle, 0.9, "ops", "user:ana", nil, now, time.Hour)
	if err := d.Write(ctx, user, rev); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		cur, _ := d.Current(tenantG.Key())
		return cur.GetDecidedBy() == "user:ana"
	}, "mirror did not see the user's policy")
	w := win("1h", reputation.Counts{reputation.Delivered: 5000, reputation.Complained: 20})
	if pc, err := d.Decide(ctx, tenantG, w, now.Add(time.Minute)); err != nil || pc != nil {
		t.Fatalf("rules replaced a person's policy: %v %v", pc, err)
	}
}
