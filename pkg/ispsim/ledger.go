package ispsim

import (
	"context"
	"encoding/json"
	"net/http"
	"net/mail"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Message is one accepted SMTP transaction. It never changes once it is in
// the ledger.
type Message struct {
	Seq        int64       `json:"seq"`
	Provider   string      `json:"provider"`
	SourceIP   netip.Addr  `json:"source_ip"`
	LocalAddr  string      `json:"local_addr"`
	EHLO       string      `json:"ehlo"`
	TLS        bool        `json:"tls"`
	MailFrom   string      `json:"mail_from"`
	EnvelopeID string      `json:"envelope_id,omitempty"`
	Rcpts      []string    `json:"rcpts"`
	MessageID  string      `json:"message_id"`
	Header     mail.Header `json:"header"`
	Data       []byte      `json:"data,omitempty"`
	Size       int         `json:"size"`
	ReceivedAt time.Time   `json:"received_at"`
	// Arrival counts the transactions, this one included, that brought the
	// same Message-ID to the same provider: 1 for the first copy.
	Arrival int          `json:"arrival"`
	Auth    AuthVerdicts `json:"auth"`
	// Fates maps each recipient to what happens next: "delivered", "dsn"
	// or "complaint".
	Fates map[string]string `json:"fates"`
}

// Rejection is one error reply the simulator gave.
type Rejection struct {
	Seq      int64      `json:"seq"`
	Provider string     `json:"provider"`
	SourceIP netip.Addr `json:"source_ip"`
	// Stage is "connect", "mail", "rcpt" or "data".
	Stage    string    `json:"stage"`
	Reason   string    `json:"reason"` // rate, greylist, unknown, blocked, ...
	MailFrom string    `json:"mail_from,omitempty"`
	Rcpt     string    `json:"rcpt,omitempty"`
	Code     int       `json:"code"`
	Enhanced string    `json:"enhanced,omitempty"`
	Text     string    `json:"text"`
	At       time.Time `json:"at"`
}

// Temporary reports a 4xx reply.
func (r *Rejection) Temporary() bool { return r.Code >= 400 && r.Code < 500 }

// Report is a DSN or ARF report the simulator produced.
type Report struct {
	Seq      int64  `json:"seq"`
	Kind     string `json:"kind"` // "dsn" or "arf"
	Provider string `json:"provider"`
	// Via is "smtp" or "imap"; To is the SMTP recipient or the IMAP
	// user/mailbox.
	Via  string `json:"via"`
	To   string `json:"to"`
	Addr string `json:"addr,omitempty"` // host:port it was sent to
	// About identifies the reported message and recipient.
	MessageID string     `json:"message_id"`
	Rcpt      string     `json:"rcpt"`
	SourceIP  netip.Addr `json:"source_ip"`
	Status    string     `json:"status,omitempty"` // DSN status code
	At        time.Time  `json:"at"`
	Attempts  int        `json:"attempts"`
	Err       string     `json:"err,omitempty"` // last delivery error; empty when delivered
	Data      []byte     `json:"data,omitempty"`
}

// Delivered reports whether the report reached its destination.
func (r *Report) Delivered() bool { return r.Err == "" }

// Counter is the tally of one (provider, source IP).
type Counter struct {
	Provider    string     `json:"provider"`
	SourceIP    netip.Addr `json:"source_ip"`
	Connections int        `json:"connections"`
	Active      int        `json:"active"`
	Accepted    int        `json:"accepted"`
	Deferred    int        `json:"deferred"`
	Rejected    int        `json:"rejected"`
	First       time.Time  `json:"first"`
	Last        time.Time  `json:"last"`
}

type counterKey struct {
	provider string
	ip       netip.Addr
}

// Ledger records everything the simulator saw and did.
type Ledger struct {
	clock Clock
	max   int

	mu         sync.Mutex
	seq        int64
	messages   []*Message
	rejections []*Rejection
	reports    []*Report
	counters   map[counterKey]*Counter
	arrivals   map[string]int // provider + "\x00" + Message-ID → count
	changed    chan struct{}

	accepted    *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	connections *prometheus.CounterVec
	active      *prometheus.GaugeVec
	reportsM    *prometheus.CounterVec
	duplicates  *prometheus.CounterVec
}

func newLedger(clock Clock, reg *prometheus.Registry, maxEntries int) *Ledger {
	l := &Ledger{
		clock:    clock,
		max:      maxEntries,
		counters: map[counterKey]*Counter{},
		arrivals: map[string]int{},
		changed:  make(chan struct{}),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ispsim", Name: "messages_accepted_total",
			Help: "SMTP transactions accepted, by provider and source IP.",
		}, []string{"provider", "source_ip"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ispsim", Name: "rejections_total",
			Help: "Error replies given, by provider, source IP, reply code and reason.",
		}, []string{"provider", "source_ip", "code", "reason"}),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ispsim", Name: "connections_total",
			Help: "SMTP connections accepted, by provider and source IP.",
		}, []string{"provider", "source_ip"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "ispsim", Name: "connections_active",
			Help: "Open SMTP connections, by provider and source IP.",
		}, []string{"provider", "source_ip"}),
		reportsM: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ispsim", Name: "reports_total",
			Help: "DSN and ARF reports sent, by kind, transport and result.",
		}, []string{"provider", "kind", "via", "result"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ispsim", Name: "duplicate_messages_total",
			Help: "Transactions whose Message-ID the provider had already accepted.",
		}, []string{"provider"}),
	}
	reg.MustRegister(l.accepted, l.rejected, l.connections, l.active, l.reportsM, l.duplicates)
	return l
}

// notify wakes every waiter; l.mu must be held.
func (l *Ledger) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *Ledger) counter(provider string, ip netip.Addr, now time.Time) *Counter {
	k := counterKey{provider, ip}
	c := l.counters[k]
	if c == nil {
		c = &Counter{Provider: provider, SourceIP: ip, First: now}
		l.counters[k] = c
	}
	c.Last = now
	return c
}

func (l *Ledger) connOpened(provider string, ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.counter(provider, ip, l.clock.Now())
	c.Connections++
	c.Active++
	l.connections.WithLabelValues(provider, ip.String()).Inc()
	l.active.WithLabelValues(provider, ip.String()).Inc()
	l.notify()
}

func (l *Ledger) connClosed(provider string, ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.counter(provider, ip, l.clock.Now())
	c.Active--
	l.active.WithLabelValues(provider, ip.String()).Dec()
	l.notify()
}

func (l *Ledger) addMessage(m *Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	m.Seq = l.seq
	if m.MessageID != "" {
		k := m.Provider + "\x00" + m.MessageID
		l.arrivals[k]++
		m.Arrival = l.arrivals[k]
		if m.Arrival > 1 {
			l.duplicates.WithLabelValues(m.Provider).Inc()
		}
	} else {
		m.Arrival = 1
	}
	l.messages = trim(append(l.messages, m), l.max)
	l.counter(m.Provider, m.SourceIP, m.ReceivedAt).Accepted++
	l.accepted.WithLabelValues(m.Provider, m.SourceIP.String()).Inc()
	l.notify()
}

func (l *Ledger) addRejection(r *Rejection) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	r.Seq = l.seq
	l.rejections = trim(append(l.rejections, r), l.max)
	c := l.counter(r.Provider, r.SourceIP, r.At)
	if r.Temporary() {
		c.Deferred++
	} else {
		c.Rejected++
	}
	l.rejected.WithLabelValues(r.Provider, r.SourceIP.String(), strconv.Itoa(r.Code), r.Reason).Inc()
	l.notify()
}

func (l *Ledger) addReport(r *Report) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	r.Seq = l.seq
	l.reports = trim(append(l.reports, r), l.max)
	result := "delivered"
	if r.Err != "" {
		result = "failed"
	}
	l.reportsM.WithLabelValues(r.Provider, r.Kind, r.Via, result).Inc()
	l.notify()
}

// trim drops the oldest tenth of s once it is longer than max (0: never).
// Snapshots taken before keep their own view.
func trim[T any](s []T, max int) []T {
	if max <= 0 || len(s) <= max {
		return s
	}
	drop := len(s) - max + max/10
	return append([]T(nil), s[drop:]...)
}

// Snapshot is the ledger at one instant. Its slices are shared, read-only
// views: entries never change once recorded.
type Snapshot struct {
	At         time.Time    `json:"at"`
	Messages   []*Message   `json:"messages"`
	Rejections []*Rejection `json:"rejections"`
	Reports    []*Report    `json:"reports"`
	Counters   []Counter    `json:"counters"`
}

// Snapshot returns the ledger's current content.
func (l *Ledger) Snapshot() *Snapshot {
	s, _ := l.snapshot()
	return s
}

func (l *Ledger) snapshot() (*Snapshot, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := &Snapshot{
		At:         l.clock.Now(),
		Messages:   l.messages[:len(l.messages):len(l.messages)],
		Rejections: l.rejections[:len(l.rejections):len(l.rejections)],
		Reports:    l.reports[:len(l.reports):len(l.reports)],
		Counters:   make([]Counter, 0, len(l.counters)),
	}
	for _, c := range l.counters {
		s.Counters = append(s.Counters, *c)
	}
	sort.Slice(s.Counters, func(i, j int) bool {
		a, b := s.Counters[i], s.Counters[j]
		if a.Provider != b.Provider {
			return a.Provider < b.Provider
		}
		return a.SourceIP.Less(b.SourceIP)
	})
	return s, l.changed
}

// Changed returns a channel closed at the next change of the ledger.
func (l *Ledger) Changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// Wait returns the first snapshot for which cond is true, checking after
// every change, or ctx's error.
func (l *Ledger) Wait(ctx context.Context, cond func(*Snapshot) bool) (*Snapshot, error) {
	for {
		s, ch := l.snapshot()
		if cond(s) {
			return s, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return s, ctx.Err()
		}
	}
}

// MessagesWithID returns the accepted transactions carrying Message-ID id
// (with or without angle brackets).
func (s *Snapshot) MessagesWithID(id string) []*Message {
	id = normalizeMsgID(id)
	var out []*Message
	for _, m := range s.Messages {
		if m.MessageID == id {
			out = append(out, m)
		}
	}
	return out
}

// Delivered counts the accepted copies of Message-ID id for rcpt; "" counts
// copies for any recipient. "Exactly once" is Delivered(id, rcpt) == 1.
func (s *Snapshot) Delivered(id, rcpt string) int {
	n := 0
	for _, m := range s.MessagesWithID(id) {
		if rcpt == "" {
			n++
			continue
		}
		for _, r := range m.Rcpts {
			if strings.EqualFold(r, rcpt) {
				n++
			}
		}
	}
	return n
}

// Duplicates lists the Message-IDs accepted more than once by one
// provider, with their counts.
func (s *Snapshot) Duplicates() map[string]int {
	out := map[string]int{}
	for _, m := range s.Messages {
		if m.Arrival > 1 {
			out[m.MessageID] = max(out[m.MessageID], m.Arrival)
		}
	}
	return out
}

// To returns the accepted transactions that had rcpt among their recipients.
func (s *Snapshot) To(rcpt string) []*Message {
	var out []*Message
	for _, m := range s.Messages {
		for _, r := range m.Rcpts {
			if strings.EqualFold(r, rcpt) {
				out = append(out, m)
				break
			}
		}
	}
	return out
}

// Accepted returns the transactions a provider ("" for any) accepted from
// ip (the zero Addr for any).
func (s *Snapshot) Accepted(provider string, ip netip.Addr) []*Message {
	var out []*Message
	for _, m := range s.Messages {
		if (provider == "" || m.Provider == provider) && (!ip.IsValid() || m.SourceIP == ip) {
			out = append(out, m)
		}
	}
	return out
}

// RejectionsFor returns the rejections a provider ("" for any) gave to ip
// (the zero Addr for any) for reason ("" for any).
func (s *Snapshot) RejectionsFor(provider string, ip netip.Addr, reason string) []*Rejection {
	var out []*Rejection
	for _, r := range s.Rejections {
		if (provider == "" || r.Provider == provider) && (!ip.IsValid() || r.SourceIP == ip) && (reason == "" || r.Reason == reason) {
			out = append(out, r)
		}
	}
	return out
}

// ReportsOf returns the reports of kind ("dsn", "arf" or "" for both).
func (s *Snapshot) ReportsOf(kind string) []*Report {
	var out []*Report
	for _, r := range s.Reports {
		if kind == "" || r.Kind == kind {
			out = append(out, r)
		}
	}
	return out
}

// Counter returns the tally of (provider, ip).
func (s *Snapshot) Counter(provider string, ip netip.Addr) Counter {
	for _, c := range s.Counters {
		if c.Provider == provider && c.SourceIP == ip {
			return c
		}
	}
	return Counter{Provider: provider, SourceIP: ip}
}

// MaxInWindow is the largest number of transactions a provider ("" for
// any) accepted from ip within any window of length w, measured on the
// simulator's clock: the observed peak rate per source IP.
func (s *Snapshot) MaxInWindow(provider string, ip netip.Addr, w time.Duration) int {
	msgs := s.Accepted(provider, ip)
	times := make([]time.Time, len(msgs))
	for i, m := range msgs {
		times[i] = m.ReceivedAt
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	best, lo := 0, 0
	for hi := range times {
		for times[hi].Sub(times[lo]) >= w {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// Handler serves the snapshot as JSON. Message bodies and report data are
// left out unless the query has data=1.
func (l *Ledger) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := l.Snapshot()
		if r.URL.Query().Get("data") != "1" {
			s = s.withoutData()
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s) // a failed write means the client went away
	})
}

func (s *Snapshot) withoutData() *Snapshot {
	out := *s
	out.Messages = make([]*Message, len(s.Messages))
	for i, m := range s.Messages {
		c := *m
		c.Data = nil
		out.Messages[i] = &c
	}
	out.Reports = make([]*Report, len(s.Reports))
	for i, r := range s.Reports {
		c := *r
		c.Data = nil
		out.Reports[i] = &c
	}
	return &out
}

func normalizeMsgID(id string) string {
	id = strings.TrimSpace(id)
	id = strings.TrimPrefix(id, "<")
	return strings.TrimSuffix(id, ">")
}
