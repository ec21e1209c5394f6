package sender

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailwave/mailwave/pkg/dkim"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// What MW_DKIM_MISSING_KEY may say.
const (
	missingKeyDefer = "defer"
	missingKeySend  = "send"
)

// loadSigner reads a key folder into a signer. Its errors name files and
// never quote key material (package dkim's promise).
func loadSigner(dir string) (*dkim.Signer, error) {
	keys, err := dkim.LoadDir(dir)
	if err != nil {
		return nil, err
	}
	return dkim.NewSigner(keys...)
}

// signing signs each attempt's message with the keys of its sending
// domain. The keys come from a folder read at start and again every
// reload interval, so that a key added to the Secret (or a rotated one)
// is used without a restart; a folder that no longer reads keeps the keys
// in use.
type signing struct {
	dir     string
	missing string
	log     *slog.Logger
	signer  atomic.Pointer[dkim.Signer]
	// names is the key set in use, by public record, to tell a changed
	// folder from an unchanged one.
	names  atomic.Value // string
	result *prometheus.CounterVec
}

func newSigning(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*signing, error) {
	s := &signing{dir: cfg.DKIMKeys, missing: cmp.Or(cfg.DKIMMissingKey, missingKeyDefer), log: log,
		result: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailwave_sender_dkim_total",
			Help: "Attempts by DKIM outcome: signed, unsigned (signing off or a missing key sent anyway), missing_key (deferred), invalid (unsignable message).",
		}, []string{"result"})}
	reg.MustRegister(s.result)
	if s.dir == "" {
		log.Warn("DKIM signing off: MW_DKIM_KEYS is not set; mail leaves unsigned")
		return s, nil
	}
	sg, err := loadSigner(s.dir)
	if err != nil {
		return nil, fmt.Errorf("sender: MW_DKIM_KEYS: %w", err)
	}
	s.use(sg)
	return s, nil
}

// use puts a signer in service and says which keys it holds (names and
// algorithms: Key prints no secret).
func (s *signing) use(sg *dkim.Signer) {
	s.names.Store(keySet(sg))
	s.signer.Store(sg)
	keys := sg.Keys("")
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.String() // "rsa-2048 key sel._domainkey.example.com"
	}
	s.log.Info("DKIM keys in use", "keys", names)
}

// keySet identifies a signer's keys by their public records, to tell a
// changed folder from an unchanged one.
func keySet(sg *dkim.Signer) string {
	keys := sg.Keys("")
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.RecordName() + " " + k.Record()
	}
	return strings.Join(ids, "\n")
}

// reloadEvery reads the folder again every d until ctx ends.
func (s *signing) reloadEvery(ctx context.Context, d time.Duration) {
	if s.dir == "" || d <= 0 {
		return
	}
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.reload()
		}
	}
}

func (s *signing) reload() {
	sg, err := loadSigner(s.dir)
	if err != nil {
		s.log.Warn("DKIM keys not reloaded; the keys in use stay", "dir", s.dir, "err", err)
		return
	}
	if keySet(sg) == s.names.Load() {
		return
	}
	s.use(sg)
}

// signed is the decision about one attempt's DKIM: the keys to sign with
// (none: send unsigned), or an outcome that ends the attempt.
type signed struct {
	keys []*dkim.Key
	stop *outcome
}

// plan chooses the keys for d before anything is spent on it (a rate
// token, a connection): every key of the sending domain, or those of the
// selectors its routing names. A missing key defers the message (or sends
// it unsigned, or with the signatures it can have, when configured so).
func (s *signing) plan(d *mailwavev1.DispatchMessage) signed {
	sg := s.signer.Load()
	if sg == nil {
		return signed{}
	}
	r := d.GetRouting()
	domain, selectors := r.GetSendingDomain(), r.GetDkimSelectors()
	keys, err := sg.Select(domain, selectors)
	if err == nil {
		return signed{keys: keys}
	}
	if s.missing == missingKeySend {
		// Sign with what exists of the named selectors (none: unsigned).
		for _, sel := range selectors {
			if k, err := sg.Select(domain, []string{sel}); err == nil {
				keys = append(keys, k...)
			}
		}
		return signed{keys: keys}
	}
	s.result.WithLabelValues("missing_key").Inc()
	want := "any selector"
	if len(selectors) > 0 {
		want = "selectors " + strings.Join(selectors, ", ")
	}
	// The message waits for its key: a missing key is a configuration
	// gap on our side, which the operator closes by adding the key to
	// MW_DKIM_KEYS (read again every MW_DKIM_RELOAD). Sending unsigned
	// would fail DMARC at the providers and hurt the domain's reputation;
	// bouncing would lose the message for a fault that is not the
	// recipient's.
	return signed{stop: &outcome{
		kind: mailwavev1.EventKind_EVENT_KIND_DEFERRED, class: mailwavev1.BounceClass_BOUNCE_CLASS_SOFT,
		reason: "securityerror", phase: "dkim", signal: mailwavev1.Signal_SIGNAL_NONE,
		text: fmt.Sprintf("no DKIM key for sending domain %q (%s) in MW_DKIM_KEYS: waiting for the key (MW_DKIM_MISSING_KEY=defer)", domain, want),
	}}
}

// sign returns data signed with the plan's keys, or data itself without
// keys. A message that cannot be signed (no From field, a broken header)
// never can be: it bounces.
func (s *signing) sign(p signed, data []byte) ([]byte, *outcome) {
	if len(p.keys) == 0 {
		s.result.WithLabelValues("unsigned").Inc()
		return data, nil
	}
	out, err := s.signer.Load().SignWith(p.keys, data)
	if err != nil {
		s.result.WithLabelValues("invalid").Inc()
		o := &outcome{kind: mailwavev1.EventKind_EVENT_KIND_BOUNCED, class: mailwavev1.BounceClass_BOUNCE_CLASS_SOFT,
			reason: "notcompliantrfc", phase: "dkim", signal: mailwavev1.Signal_SIGNAL_CONTENT, text: err.Error()}
		if !errors.Is(err, dkim.ErrMessage) {
			// Not the message's fault (a key the crypto library refused):
			// keep the message.
			o.kind, o.reason, o.signal = mailwavev1.EventKind_EVENT_KIND_DEFERRED, "securityerror", mailwavev1.Signal_SIGNAL_NONE
		}
		return nil, o
	}
	s.result.WithLabelValues("signed").Inc()
	return out, nil
}
