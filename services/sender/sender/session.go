package sender

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/mailwave/mailwave/pkg/ratelimit"
	"github.com/mailwave/mailwave/pkg/response"
	"github.com/mailwave/mailwave/pkg/smtpclient"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// sessionKey identifies reusable SMTP sessions: the same source IP to the
// same MX address, or to the same smarthost of a relay route (whose
// session is authenticated as that route).
type sessionKey struct {
	source netip.Addr
	addr   string
	route  string
}

type idle struct {
	c     *smtpclient.Client
	lease *ratelimit.Kept
	// slot is the connection gate's key of the lease.
	slot  string
	since time.Time
}

// sessions keeps idle SMTP sessions for reuse, up to maxPer messages each
// (or the shaping policy's lower cap), with the connection lease each one
// holds (kept alive by the lease keeper while the session lives).
type sessions struct {
	maxPer int
	mu     sync.Mutex
	idle   map[sessionKey][]idle
}

func newSessions(maxPer int) *sessions {
	return &sessions{maxPer: maxPer, idle: map[sessionKey][]idle{}}
}

func (s *sessions) take(k sessionKey) (idle, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.idle[k]
	if len(list) == 0 {
		return idle{}, false
	}
	it := list[len(list)-1]
	s.idle[k] = list[:len(list)-1]
	return it, true
}

func (s *sessions) put(k sessionKey, it idle, maxPer int) {
	if maxPer <= 0 || maxPer > s.maxPer {
		maxPer = s.maxPer
	}
	// A session whose slot lapsed (Redis out of reach for a whole lease
	// TTL) may be one too many now: end it.
	if it.c.Sent() >= maxPer || it.c.Closed() || (it.lease != nil && it.lease.Lost()) {
		s.close(it)
		return
	}
	it.since = time.Now()
	s.mu.Lock()
	s.idle[k] = append(s.idle[k], it)
	s.mu.Unlock()
}

// close ends a session and frees its connection slot.
func (s *sessions) close(it idle) {
	if !it.c.Closed() {
		_ = it.c.Quit(context.Background())
	}
	if it.lease != nil {
		_ = it.lease.Release(context.Background())
	}
}

// send delivers one message on a reused or new session. ready runs once,
// when a session is in hand and before anything is sent (the message's
// rate reservation is redeemed then); its error ends the attempt and keeps
// the session. A session that failed at the network level is closed; one
// that answered is kept.
func (s *sessions) send(ctx context.Context, k sessionKey, gate *connGate, dialer func() *smtpclient.Dialer, serverName, from, rcpt string, data []byte, ready func() error) (*smtpclient.Result, error) {
	readied := false
	for {
		it, reused := s.take(k)
		if !reused {
			lease, err := gate.open(ctx)
			if err != nil {
				return nil, err
			}
			c, err := dialer().Dial(ctx, k.addr, serverName)
			if err != nil {
				if lease != nil {
					_ = lease.Release(context.Background())
				}
				return nil, err
			}
			it = idle{c: c, lease: lease, slot: gate.key}
		}
		if !readied {
			if err := ready(); err != nil {
				s.put(k, it, gate.maxPerConnection())
				return nil, err
			}
			readied = true
		}
		c := it.c
		res, err := c.Send(ctx, from, []string{rcpt}, data, smtpclient.SendOptions{})
		var se *smtpclient.Error
		if err != nil && !(errors.As(err, &se) && se.Code > 0) {
			_ = c.Close()
			s.close(it)
			if reused && (se == nil || !se.MaybeDelivered()) {
				// The server closed an idle session before the content
				// went out: not the message's fault, and nothing was
				// delivered, so try a fresh session at once.
				continue
			}
			return nil, err
		}
		if err != nil && se.Code == 421 {
			// 421 closes the session (RFC 5321 §3.8).
			_ = c.Close()
			s.close(it)
			return nil, err
		}
		s.put(k, it, gate.maxPerConnection())
		return res, err
	}
}

// yield ends, every interval until ctx ends, the longest idle session of
// each connection slot another replica waits for (wanted reports, and
// clears, which of the given slots are wanted): a replica with more
// sessions than it uses would otherwise keep every slot of a provider to
// itself until its sessions time out, and leave the others waiting.
func (s *sessions) yield(ctx context.Context, interval time.Duration, wanted func(ctx context.Context, slots []string) ([]bool, error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// The slots of idle sessions; a slot whose sessions are all busy
		// has nothing to give.
		s.mu.Lock()
		seen := map[string]bool{}
		var slots []string
		for _, list := range s.idle {
			for _, it := range list {
				if it.lease != nil && !seen[it.slot] {
					seen[it.slot] = true
					slots = append(slots, it.slot)
				}
			}
		}
		s.mu.Unlock()
		if len(slots) == 0 {
			continue
		}
		want, err := wanted(ctx, slots)
		if err != nil {
			continue
		}
		for i, slot := range slots {
			if want[i] {
				if it, ok := s.takeOldest(slot); ok {
					s.close(it)
				}
			}
		}
	}
}

// takeOldest removes the longest idle session of slot.
func (s *sessions) takeOldest(slot string) (idle, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best sessionKey
	bestAt := -1
	var since time.Time
	for k, list := range s.idle {
		for i, it := range list {
			if it.slot == slot && it.lease != nil && (bestAt < 0 || it.since.Before(since)) {
				best, bestAt, since = k, i, it.since
			}
		}
	}
	if bestAt < 0 {
		return idle{}, false
	}
	list := s.idle[best]
	it := list[bestAt]
	s.idle[best] = append(list[:bestAt:bestAt], list[bestAt+1:]...)
	return it, true
}

// reapIdle closes sessions idle for longer than timeout until ctx ends.
func (s *sessions) reapIdle(ctx context.Context, timeout time.Duration) {
	t := time.NewTicker(max(timeout/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			var stale []idle
			s.mu.Lock()
			for k, list := range s.idle {
				kept := list[:0]
				for _, it := range list {
					if now.Sub(it.since) > timeout {
						stale = append(stale, it)
					} else {
						kept = append(kept, it)
					}
				}
				s.idle[k] = kept
			}
			s.mu.Unlock()
			for _, it := range stale {
				s.close(it)
			}
		}
	}
}

func (s *sessions) closeAll() {
	s.mu.Lock()
	all := s.idle
	s.idle = map[sessionKey][]idle{}
	s.mu.Unlock()
	for _, list := range all {
		for _, it := range list {
			s.close(it)
		}
	}
}

// classify turns the result of one SMTP transaction into an outcome, with
// the response rules deciding what an answer means.
func classify(rules *response.Rules, a response.Answer, res *smtpclient.Result, err error) outcome {
	if err == nil {
		o := outcome{kind: mailwavev1.EventKind_EVENT_KIND_DELIVERED, code: 250, phase: "dot", signal: mailwavev1.Signal_SIGNAL_NONE}
		if res != nil {
			o.code, o.enhanced, o.text, o.tls = res.Code, res.EnhancedCode, res.Reply, res.TLS
		}
		return o
	}
	var se *smtpclient.Error
	if !errors.As(err, &se) {
		return outcome{kind: mailwavev1.EventKind_EVENT_KIND_DEFERRED, class: mailwavev1.BounceClass_BOUNCE_CLASS_SOFT,
			reason: "networkerror", phase: "connect", text: err.Error(), signal: mailwavev1.Signal_SIGNAL_REMOTE_FAILURE}
	}
	o := outcome{code: se.Code, enhanced: se.EnhancedCode, text: se.Message, phase: string(se.Phase)}
	switch {
	case errors.Is(err, smtpclient.ErrTLSRequired), errors.Is(err, smtpclient.ErrTLSUnverified):
		// The route or the destination requires TLS and this server could
		// not give it: the message waits rather than leave in plaintext.
		o.kind, o.class, o.reason, o.signal = mailwavev1.EventKind_EVENT_KIND_DEFERRED, mailwavev1.BounceClass_BOUNCE_CLASS_SOFT, "failedstarttls", mailwavev1.Signal_SIGNAL_NONE
		o.text = "TLS required, not sent in plaintext: " + se.Error()
		return o
	case se.Code == 0 && (errors.Is(err, smtpclient.ErrAuthNeedsTLS) || errors.Is(err, smtpclient.ErrAuthUnsupported)):
		o.kind, o.class, o.reason, o.signal = mailwavev1.EventKind_EVENT_KIND_DEFERRED, mailwavev1.BounceClass_BOUNCE_CLASS_SOFT, "securityerror", mailwavev1.Signal_SIGNAL_NONE
		o.text = se.Error()
		return o
	}
	if se.Code == 0 {
		// No answer: a network failure, a timeout or a TLS failure.
		o.kind, o.class, o.reason = mailwavev1.EventKind_EVENT_KIND_DEFERRED, mailwavev1.BounceClass_BOUNCE_CLASS_SOFT, "networkerror"
		o.signal = mailwavev1.Signal_SIGNAL_REMOTE_FAILURE
		if se.Err != nil {
			o.text = se.Err.Error()
		}
		return o
	}
	a.Phase, a.Code, a.Enhanced, a.Text = string(se.Phase), se.Code, se.EnhancedCode, se.Message
	d := rules.Decide(a)
	o.reason, o.retry, o.rule = string(d.Reason), d.Retry, d.Rule
	o.signal = signals[d.Signal]
	switch d.Action {
	case response.Bounce:
		o.kind, o.class = mailwavev1.EventKind_EVENT_KIND_BOUNCED, mailwavev1.BounceClass_BOUNCE_CLASS_SOFT
		if d.Hard {
			o.class = mailwavev1.BounceClass_BOUNCE_CLASS_HARD
		}
	case response.Deliver:
		o.kind = mailwavev1.EventKind_EVENT_KIND_DELIVERED
	default:
		o.kind, o.class = mailwavev1.EventKind_EVENT_KIND_DEFERRED, mailwavev1.BounceClass_BOUNCE_CLASS_SOFT
	}
	return o
}

var signals = map[response.Signal]mailwavev1.Signal{
	response.SignalNone:             mailwavev1.Signal_SIGNAL_NONE,
	response.SignalThrottled:        mailwavev1.Signal_SIGNAL_THROTTLED,
	response.SignalBlocked:          mailwavev1.Signal_SIGNAL_BLOCKED,
	response.SignalAuthFailure:      mailwavev1.Signal_SIGNAL_AUTH_FAILURE,
	response.SignalContent:          mailwavev1.Signal_SIGNAL_CONTENT,
	response.SignalInvalidRecipient: mailwavev1.Signal_SIGNAL_INVALID_RECIPIENT,
	response.SignalRemoteFailure:    mailwavev1.Signal_SIGNAL_REMOTE_FAILURE,
}
