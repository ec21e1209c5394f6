package reputation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/events"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// ErrConflict is returned by Decider.Write when another writer changed the
// scope's policy first.
var ErrConflict = errors.New("reputation: policy changed concurrently")

type entry struct {
	pc  *mailwavev1.PolicyChange
	rev uint64
}

// Decider owns the policy bucket: it mirrors it through a watch, and
// writes every change with a revision compare-and-set, so replicas that
// reach the same decision write it once and never undo each other.
type Decider struct {
	KV     jetstream.KeyValue
	Pub    *events.Publisher
	Policy *Policy
	Log    *slog.Logger

	decisions *prometheus.CounterVec
	factor    *prometheus.GaugeVec

	mu    sync.RWMutex
	byKey map[string]entry
}

// NewDecider returns a decider; reg receives its metrics.
func NewDecider(kv jetstream.KeyValue, pub *events.Publisher, p *Policy, log *slog.Logger, reg prometheus.Registerer) *Decider {
	d := &Decider{KV: kv, Pub: pub, Policy: p, Log: log, byKey: map[string]entry{},
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailwave_reputation_decisions_total",
			Help: "Policy changes written, by rule (or user/resume) and action."}, []string{"decided_by", "action"}),
		factor: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mailwave_reputation_policy_factor",
			Help: "Current policies: 0 paused, the rate factor when throttled, 1 resumed, the rate per hour when pinned."}, []string{"key", "action"}),
	}
	if reg != nil {
		reg.MustRegister(d.decisions, d.factor)
	}
	return d
}

// Watch mirrors the bucket until ctx ends. It returns once the initial
// values are loaded; the mirror then keeps up in the background.
func (d *Decider) Watch(ctx context.Context) error {
	w, err := d.KV.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("reputation: watch policies: %w", err)
	}
	ready := make(chan struct{})
	go func() {
		defer func() { _ = w.Stop() }()
		once := sync.OnceFunc(func() { close(ready) })
		defer once()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					once()
					continue
				}
				d.observe(e)
			}
		}
	}()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *Decider) observe(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		d.mu.Lock()
		defer d.mu.Unlock()
		if old, ok := d.byKey[e.Key()]; ok && old.rev <= e.Revision() {
			d.factor.DeleteLabelValues(e.Key(), actionWord(old.pc.GetAction()))
			delete(d.byKey, e.Key())
		}
		return
	}
	pc := &mailwavev1.PolicyChange{}
	if err := proto.Unmarshal(e.Value(), pc); err != nil {
		d.Log.Warn("undecodable policy", "key", e.Key(), "err", err)
		return
	}
	d.remember(e.Key(), pc, e.Revision())
}

// remember sets key's mirrored policy unless the mirror already holds a
// newer revision.
func (d *Decider) remember(key string, pc *mailwavev1.PolicyChange, rev uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	old, ok := d.byKey[key]
	if ok && old.rev >= rev {
		return
	}
	if ok {
		d.factor.DeleteLabelValues(key, actionWord(old.pc.GetAction()))
	}
	d.byKey[key] = entry{pc: pc, rev: rev}
	v := 1.0
	switch pc.GetAction() {
	case mailwavev1.PolicyAction_POLICY_ACTION_PAUSE:
		v = 0
	case mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE:
		v = pc.GetRateFactor()
	case mailwavev1.PolicyAction_POLICY_ACTION_PIN_RATE:
		v = pc.GetRatePerHour()
	}
	d.factor.WithLabelValues(key, actionWord(pc.GetAction())).Set(v)
}

func actionWord(a mailwavev1.PolicyAction) string {
	return strings.ToLower(strings.TrimPrefix(a.String(), "POLICY_ACTION_"))
}

// Current returns the mirrored policy of key and its revision (0 when
// none).
func (d *Decider) Current(key string) (*mailwavev1.PolicyChange, uint64) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	e := d.byKey[key]
	return e.pc, e.rev
}

// Policies returns every mirrored policy, by key.
func (d *Decider) Policies() map[string]*mailwavev1.PolicyChange {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make(map[string]*mailwavev1.PolicyChange, len(d.byKey))
	for k, e := range d.byKey {
		out[k] = e.pc
	}
	return out
}

// Write stores pc as the policy of its scope if the stored revision is
// still rev (0: no policy), then announces it on the policy subject. It
// returns ErrConflict when another writer came first.
func (d *Decider) Write(ctx context.Context, pc *mailwavev1.PolicyChange, rev uint64) error {
	return WritePolicy(ctx, d.KV, d.Pub, pc, rev, d.observeWritten(pc))
}

// observeWritten counts a written change and puts it in the mirror at
// once: the decider reads its own writes, so a decision taken right after
// never starts from the value it just replaced (the watch delivers the
// same revision later, and observe ignores what is not newer).
func (d *Decider) observeWritten(pc *mailwavev1.PolicyChange) func(uint64) {
	return func(rev uint64) {
		d.decisions.WithLabelValues(pc.GetDecidedBy(), actionWord(pc.GetAction())).Inc()
		d.remember(mailwavev1.PolicyKey(pc.GetScope()), pc, rev)
	}
}

// WritePolicy stores pc under its scope's key with a compare-and-set on
// rev (0: the key must hold no live value) and publishes it on
// SubjectPolicyEvent. It returns ErrConflict when the revision moved.
// done, when set, is called with the new revision.
func WritePolicy(ctx context.Context, kv jetstream.KeyValue, pub *events.Publisher, pc *mailwavev1.PolicyChange, rev uint64, done func(uint64)) error {
	key := mailwavev1.PolicyKey(pc.GetScope())
	data, err := proto.Marshal(pc)
	if err != nil {
		return fmt.Errorf("reputation: marshal policy: %w", err)
	}
	var nrev uint64
	if rev == 0 {
		nrev, err = kv.Create(ctx, key, data)
	} else {
		nrev, err = kv.Update(ctx, key, data, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("%w: %s", ErrConflict, key)
	}
	if err != nil {
		return fmt.Errorf("reputation: write policy %s: %w", key, err)
	}
	if done != nil {
		done(nrev)
	}
	if _, err := pub.Publish(ctx, mailwavev1.SubjectPolicyEvent(pc.GetScope().GetKind()), pc, events.WithMsgID(pc.GetId())); err != nil {
		return fmt.Errorf("reputation: announce policy %s: %w", key, err)
	}
	return nil
}

// automatic reports whether a policy may be replaced by the monitor: a
// person's live decision and a pinned rate stand until they lapse. A
// person's resume is a decision too: while it has not expired the rules
// leave the scope alone (someone looked and chose to send), after that
// they may act again.
func automatic(pc *mailwavev1.PolicyChange, now time.Time) bool {
	if ByUser(pc) && pc.GetAction() == mailwavev1.PolicyAction_POLICY_ACTION_RESUME {
		exp := pc.GetExpiresAt()
		return exp == nil || !exp.AsTime().After(now)
	}
	if !live(pc, now) {
		return true
	}
	return !ByUser(pc) && pc.GetAction() != mailwavev1.PolicyAction_POLICY_ACTION_PIN_RATE
}

// UserPrefix starts the decided_by of a person's decision ("user:ana").
const UserPrefix = "user:"

// ByUser reports whether a person decided pc (through `mailwave policy`).
func ByUser(pc *mailwavev1.PolicyChange) bool {
	return strings.HasPrefix(pc.GetDecidedBy(), UserPrefix)
}

// NewChange builds a policy change decided at now.
func NewChange(sc Scope, action mailwavev1.PolicyAction, factor float64, reason, decidedBy string, evidence map[string]string, now time.Time, lasts time.Duration) *mailwavev1.PolicyChange {
	pc := &mailwavev1.PolicyChange{
		Id: events.NewID(), Scope: sc.Proto(), Action: action, RateFactor: factor, Reason: reason,
		Evidence: evidence, DecidedBy: decidedBy, CreatedAt: timestamppb.New(now),
	}
	if lasts > 0 {
		pc.ExpiresAt = timestamppb.New(now.Add(lasts))
	}
	return pc
}

// Decide evaluates the rules for one scope and writes the verdict. A
// conflict with another replica is resolved by reading again and deciding
// once more. It returns the change written, or nil.
func (d *Decider) Decide(ctx context.Context, sc Scope, windows map[string]Counts, now time.Time) (*mailwavev1.PolicyChange, error) {
	for range 3 {
		cur, rev := d.Current(sc.Key())
		if !automatic(cur, now) {
			return nil, nil
		}
		v := d.Policy.Evaluate(sc, windows, cur, now)
		if v == nil {
			return nil, nil
		}
		lasts := v.For
		if v.Action == mailwavev1.PolicyAction_POLICY_ACTION_RESUME {
			lasts = 0
		}
		pc := NewChange(sc, v.Action, v.Factor, v.Reason, v.Rule, v.Evidence, now, lasts)
		err := d.Write(ctx, pc, rev)
		if errors.Is(err, ErrConflict) {
			if err := d.refresh(ctx, sc.Key()); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		d.Log.Info("policy decided", "key", sc.Key(), "action", actionWord(pc.GetAction()), "factor", pc.GetRateFactor(), "rule", v.Rule, "reason", v.Reason)
		return pc, nil
	}
	return nil, nil
}

// refresh reads key directly, for when the mirror is behind a conflict.
func (d *Decider) refresh(ctx context.Context, key string) error {
	e, err := d.KV.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reputation: read policy %s: %w", key, err)
	}
	d.observe(e)
	return nil
}

// Ladder moves every lapsed pause or throttle one step up the resume
// ladder: pause → throttle at each ladder factor for step_for → resume.
// It returns the changes it wrote.
func (d *Decider) Ladder(ctx context.Context, now time.Time) ([]*mailwavev1.PolicyChange, error) {
	d.mu.RLock()
	var due []string
	for k, e := range d.byKey {
		a := e.pc.GetAction()
		if (a == mailwavev1.PolicyAction_POLICY_ACTION_PAUSE || a == mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE ||
			a == mailwavev1.PolicyAction_POLICY_ACTION_PIN_RATE) && !live(e.pc, now) {
			due = append(due, k)
		}
	}
	d.mu.RUnlock()
	sort.Strings(due)
	var out []*mailwavev1.PolicyChange
	var errs []error
	for _, k := range due {
		cur, rev := d.Current(k)
		if cur == nil || live(cur, now) {
			continue
		}
		pc := d.climb(cur, now, "lapsed")
		if err := d.Write(ctx, pc, rev); err != nil {
			if !errors.Is(err, ErrConflict) {
				errs = append(errs, err)
			}
			continue
		}
		d.Log.Info("policy resuming", "key", k, "action", actionWord(pc.GetAction()), "factor", pc.GetRateFactor())
		out = append(out, pc)
	}
	return out, errors.Join(errs...)
}

// climb is the ladder step after cur.
func (d *Decider) climb(cur *mailwavev1.PolicyChange, now time.Time, why string) *mailwavev1.PolicyChange {
	sc := Scope{Kind: cur.GetScope().GetKind(), Value: cur.GetScope().GetValue(), Provider: cur.GetScope().GetProvider()}
	action, factor := d.Policy.NextResume(cur)
	if cur.GetAction() == mailwavev1.PolicyAction_POLICY_ACTION_PIN_RATE {
		action, factor = mailwavev1.PolicyAction_POLICY_ACTION_RESUME, 0
	}
	ev := map[string]string{"previous_action": actionWord(cur.GetAction()), "previous_decided_by": cur.GetDecidedBy(),
		"previous_factor": fmt.Sprint(cur.GetRateFactor())}
	reason := fmt.Sprintf("%s %s: %s", actionWord(cur.GetAction()), why, "resumed")
	lasts := time.Duration(0)
	if action == mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE {
		reason = fmt.Sprintf("%s %s: resuming gradually at rate factor %g", actionWord(cur.GetAction()), why, factor)
		lasts = d.Policy.Resume.StepFor
	}
	return NewChange(sc, action, factor, reason, "resume", ev, now, lasts)
}
