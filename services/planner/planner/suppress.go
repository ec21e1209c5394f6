package planner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/mailwave/mailwave/pkg/batch"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// suppressions mirrors the suppressions bucket in memory through a KV
// watch, so a campaign of millions is checked without a lookup per
// recipient: a global suppression, one for the whole brand (hard bounces,
// complaints, manual), or an unsubscribe from the request's communication
// type. Before each request the mirror catches up with the bucket
// (sync), so a suppression written before a request was planned is
// always honoured, whichever service or replica wrote it.
type suppressions struct {
	kv  jetstream.KeyValue
	log *slog.Logger
	// last reads the bucket's last sequence, once for every request that
	// asked while the previous read was out.
	last *batch.Fresh[uint64]

	mu      sync.RWMutex
	byKey   map[string]suppression
	applied uint64 // the bucket's last revision applied
	changed chan struct{}
	ready   bool
	reasons map[string]string // interned reason words

	size prometheus.Gauge
}

// suppression is what the mirror keeps of an entry.
type suppression struct {
	reason string
	scope  mailwavev1.SuppressionScope
}

// newSuppressions mirrors the bucket kv, whose stream is st.
func newSuppressions(kv jetstream.KeyValue, st jetstream.Stream, log *slog.Logger) *suppressions {
	return &suppressions{kv: kv, log: log, byKey: map[string]suppression{}, changed: make(chan struct{}), reasons: map[string]string{},
		last: batch.NewFresh(syncLimit, func(ctx context.Context) (uint64, error) {
			// The last message of the bucket, by direct get: far cheaper
			// than the stream's info, which is what KeyValue.Status reads.
			m, err := st.GetLastMsgForSubject(ctx, "$KV."+mailwavev1.BucketSuppressions+".>")
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				return 0, nil
			}
			if err != nil {
				return 0, err
			}
			return m.Sequence, nil
		}),
		size: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailwave_planner_suppressions",
			Help: "Suppressions mirrored in memory from the suppressions bucket.",
		})}
}

// watch follows the bucket until ctx ends.
func (s *suppressions) watch(ctx context.Context) error {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("planner: watch suppressions: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("planner: suppressions watch closed")
			}
			s.apply(e)
		}
	}
}

func (s *suppressions) apply(e jetstream.KeyValueEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e == nil {
		// The initial values are in.
		s.ready = true
	} else {
		if e.Operation() == jetstream.KeyValuePut {
			var sup mailwavev1.Suppression
			if err := proto.Unmarshal(e.Value(), &sup); err != nil {
				// A record we cannot read still says "suppressed": err on
				// the side of not mailing.
				sup = mailwavev1.Suppression{Reason: "unreadable suppression record"}
			}
			s.byKey[e.Key()] = suppression{reason: s.intern(sup.GetReason()), scope: scopeOf(e.Key())}
		} else {
			delete(s.byKey, e.Key())
		}
		s.applied = max(s.applied, e.Revision())
		s.size.Set(float64(len(s.byKey)))
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *suppressions) intern(r string) string {
	if v, ok := s.reasons[r]; ok {
		return v
	}
	if len(s.reasons) < 1000 {
		s.reasons[r] = r
	}
	return r
}

// scopeOf reads the scope from a key's prefix (see
// mailwavev1.SuppressionKey).
func scopeOf(key string) mailwavev1.SuppressionScope {
	switch {
	case len(key) > 2 && key[:2] == "g.":
		return mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_GLOBAL
	case len(key) > 2 && key[:2] == "t.":
		return mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_COMMUNICATION_TYPE
	default:
		return mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND
	}
}

// sync waits until the mirror holds everything the bucket held when sync
// was called. Errors are the bucket's, and temporary.
func (s *suppressions) sync(ctx context.Context) error {
	last, err := s.last.Get(ctx)
	if err != nil {
		return fmt.Errorf("planner: suppressions status: %w", err)
	}
	// Until the first pass of the watch is in, nothing is planned, however
	// long a bucket of millions takes. After it, the watch delivers within
	// milliseconds; the bound only keeps a request from waiting forever on
	// a last message the bucket no longer holds.
	var limit <-chan time.Time
	for {
		s.mu.RLock()
		ready, applied := s.ready, s.applied
		ch := s.changed
		s.mu.RUnlock()
		if ready && applied >= last {
			return nil
		}
		if ready && limit == nil {
			t := time.NewTimer(syncLimit)
			defer t.Stop()
			limit = t.C
		}
		select {
		case <-ch:
		case <-limit:
			s.log.Warn("suppressions mirror behind the bucket", "applied", applied, "last", last)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

const syncLimit = 5 * time.Second

// put records a suppression this replica just wrote, before the watch
// brings it back.
func (s *suppressions) put(key string, sup *mailwavev1.Suppression) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byKey[key]; !ok {
		s.byKey[key] = suppression{reason: s.intern(sup.GetReason()), scope: sup.GetScope()}
	}
}

// check returns the suppression that applies to addr for req, or nil:
// global first, then the brand, then the communication type.
func (s *suppressions) check(req *mailwavev1.SendRequest, addr string) *suppression {
	h := mailwavev1.AddressHash(addr)
	tenant, brand := mailwavev1.KeyToken(req.GetTenant()), mailwavev1.KeyToken(req.GetBrand())
	keys := [3]string{"g." + h, "b." + tenant + "." + brand + "." + h}
	n := 2
	if ct := req.GetCommunicationType(); ct != "" {
		keys[2] = "t." + tenant + "." + brand + "." + mailwavev1.KeyToken(ct) + "." + h
		n = 3
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, k := range keys[:n] {
		if sup, ok := s.byKey[k]; ok {
			return &sup
		}
	}
	return nil
}
