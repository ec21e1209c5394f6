package sender

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/mailwave/mailwave/pkg/response"
	"github.com/mailwave/mailwave/pkg/smtpclient"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// sessionKey identifies reusable SMTP sessions: the same source IP to the
// same MX address.
type sessionKey struct {
	source netip.Addr
	addr   string
}

type idle struct {
	c     *smtpclient.Client
	since time.Time
}

// sessions keeps idle SMTP sessions for reuse, up to maxPer messages each.
type sessions struct {
	maxPer int
	mu     sync.Mutex
	idle   map[sessionKey][]idle
}

func newSessions(maxPer int) *sessions {
	return &sessions{maxPer: maxPer, idle: map[sessionKey][]idle{}}
}

func (s *sessions) take(k sessionKey) *smtpclient.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.idle[k]
	if len(list) == 0 {
		return nil
	}
	c := list[len(list)-1].c
	s.idle[k] = list[:len(list)-1]
	return c
}

func (s *sessions) put(k sessionKey, c *smtpclient.Client) {
	if c.Sent() >= s.maxPer {
		_ = c.Quit(context.Background())
		return
	}
	s.mu.Lock()
	s.idle[k] = append(s.idle[k], idle{c: c, since: time.Now()})
	s.mu.Unlock()
}

// send delivers one message on a reused or new session. A session that
// failed at the network level is closed; one that answered is kept.
func (s *sessions) send(ctx context.Context, k sessionKey, dialer func() *smtpclient.Dialer, serverName, from, rcpt string, data []byte) (*smtpclient.Result, error) {
	for {
		c := s.take(k)
		reused := c != nil
		if c == nil {
			var err error
			c, err = dialer().Dial(ctx, k.addr, serverName)
			if err != nil {
				return nil, err
			}
		}
		res, err := c.Send(ctx, from, []string{rcpt}, data, smtpclient.SendOptions{})
		var se *smtpclient.Error
		if err != nil && !(errors.As(err, &se) && se.Code > 0) {
			_ = c.Close()
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
			return nil, err
		}
		s.put(k, c)
		return res, err
	}
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
			var stale []*smtpclient.Client
			s.mu.Lock()
			for k, list := range s.idle {
				kept := list[:0]
				for _, it := range list {
					if now.Sub(it.since) > timeout {
						stale = append(stale, it.c)
					} else {
						kept = append(kept, it)
					}
				}
				s.idle[k] = kept
			}
			s.mu.Unlock()
			for _, c := range stale {
				_ = c.Quit(context.Background())
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
			_ = it.c.Quit(context.Background())
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
