package shaping

import (
	"math"
	"time"

	"github.com/mailwave/mailwave/pkg/ratelimit"
)

// Limits are the effective limits of one source IP towards one provider.
type Limits struct {
	// MaxConnections is the number of concurrent SMTP connections.
	MaxConnections int
	// MaxMessagesPerConnection is how many messages one connection
	// carries before it is closed.
	MaxMessagesPerConnection int
	// MessagesPerSecond is a burst cap: up to this many at once, this many
	// per second sustained.
	MessagesPerSecond float64
	// MessagesPerMinute and MessagesPerHour hold in every sliding minute
	// and hour; 0 means no such limit.
	MessagesPerMinute float64
	MessagesPerHour   float64
	// ConnectionsPerMinute is the number of new connections in any
	// sliding minute.
	ConnectionsPerMinute float64
	// Paused is set by Scale(0): nothing may be sent, and the windows are
	// empty.
	Paused bool
}

// Scale returns the limits with every rate multiplied by f, the
// concurrency too (rounded up, at least 1): a throttle of the reputation
// monitor. A factor of 0 or below (or NaN) pauses.
func (l Limits) Scale(f float64) Limits {
	if !(f > 0) {
		l.Paused = true
		l.MessagesPerSecond, l.MessagesPerMinute, l.MessagesPerHour, l.ConnectionsPerMinute = 0, 0, 0, 0
		return l
	}
	l.MessagesPerSecond *= f
	l.MessagesPerMinute *= f
	l.MessagesPerHour *= f
	l.ConnectionsPerMinute *= f
	l.MaxConnections = max(1, int(math.Ceil(float64(l.MaxConnections)*f)))
	return l
}

// Pin returns the limits with the hourly rate fixed at perHour (a pin of
// the reputation monitor or an operator). The shorter windows keep
// shaping the traffic within the hour but are lowered where they alone
// would allow more than the pinned hour. A rate of 0 or below pauses.
func (l Limits) Pin(perHour float64) Limits {
	if !(perHour > 0) {
		return l.Scale(0)
	}
	l.Paused = false
	l.MessagesPerHour = perHour
	l.MessagesPerSecond = min(l.MessagesPerSecond, perHour)
	if l.MessagesPerMinute > 0 {
		l.MessagesPerMinute = min(l.MessagesPerMinute, perHour)
	}
	return l
}

// MessageWindows returns the rate windows a message is checked against
// (see the package documentation for their bursts), shortest first; none
// when paused.
func (l Limits) MessageWindows() []ratelimit.Window {
	if l.Paused || !(l.MessagesPerSecond > 0) {
		return nil
	}
	ws := []ratelimit.Window{ratelimit.Rate(l.MessagesPerSecond, time.Second)}
	shorter := l.MessagesPerSecond
	for _, w := range []struct {
		limit float64
		per   time.Duration
	}{{l.MessagesPerMinute, time.Minute}, {l.MessagesPerHour, time.Hour}} {
		if w.limit > 0 {
			ws = append(ws, ceiling(w.limit, w.per, min(w.limit/60, shorter)))
			shorter = w.limit
		}
	}
	return ws
}

// ConnectionWindows returns the window a new connection is checked
// against: ConnectionsPerMinute in any sliding minute, with a burst of at
// most MaxConnections. None when paused.
func (l Limits) ConnectionWindows() []ratelimit.Window {
	if l.Paused || !(l.ConnectionsPerMinute > 0) {
		return nil
	}
	return []ratelimit.Window{ceiling(l.ConnectionsPerMinute, time.Minute, min(l.ConnectionsPerMinute, float64(max(1, l.MaxConnections))))}
}

// ceiling is a window that lets at most limit through in any interval
// shorter than per: a burst of b, and limit−b+1 per period sustained.
func ceiling(limit float64, per time.Duration, b float64) ratelimit.Window {
	burst := max(1, int64(math.Floor(b)))
	return ratelimit.Window{Limit: limit - float64(burst) + 1, Per: per, Burst: burst}
}

// layer is one merge layer: nil fields are not set by it.
type layer struct {
	maxConnections           *int
	maxMessagesPerConnection *int
	messagesPerSecond        *float64
	messagesPerMinute        *float64
	messagesPerHour          *float64
	connectionsPerMinute     *float64
}

// over returns l with the fields o sets replaced.
func (l layer) over(o layer) layer {
	set(&l.maxConnections, o.maxConnections)
	set(&l.maxMessagesPerConnection, o.maxMessagesPerConnection)
	set(&l.messagesPerSecond, o.messagesPerSecond)
	set(&l.messagesPerMinute, o.messagesPerMinute)
	set(&l.messagesPerHour, o.messagesPerHour)
	set(&l.connectionsPerMinute, o.connectionsPerMinute)
	return l
}

// limits reads a complete layer (the long tail is checked complete, and
// every merge starts from it).
func (l layer) limits() Limits {
	return Limits{
		MaxConnections:           *l.maxConnections,
		MaxMessagesPerConnection: *l.maxMessagesPerConnection,
		MessagesPerSecond:        *l.messagesPerSecond,
		MessagesPerMinute:        *l.messagesPerMinute,
		MessagesPerHour:          *l.messagesPerHour,
		ConnectionsPerMinute:     *l.connectionsPerMinute,
	}
}

func (l layer) complete(path string) error {
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"max_connections", l.maxConnections != nil},
		{"max_messages_per_connection", l.maxMessagesPerConnection != nil},
		{"messages_per_second", l.messagesPerSecond != nil},
		{"messages_per_minute", l.messagesPerMinute != nil},
		{"messages_per_hour", l.messagesPerHour != nil},
		{"connections_per_minute", l.connectionsPerMinute != nil},
	} {
		if !f.set {
			return invalid(path+"."+f.name, "missing")
		}
	}
	return nil
}

// compileLayer checks the ranges of the fields r sets.
func compileLayer(path string, r *rawLimits) (layer, error) {
	if r == nil {
		return layer{}, nil
	}
	ints := []struct {
		name     string
		v        *int
		min, max int
	}{
		{"max_connections", r.MaxConnections, 1, maxConnections},
		{"max_messages_per_connection", r.MaxMessagesPerConnection, 1, maxPerConnection},
	}
	for _, f := range ints {
		if f.v != nil && (*f.v < f.min || *f.v > f.max) {
			return layer{}, invalid(path+"."+f.name, "must be between %d and %d, got %d", f.min, f.max, *f.v)
		}
	}
	rates := []struct {
		name     string
		v        *float64
		zeroOK   bool
		maxValue float64
	}{
		{"messages_per_second", r.MessagesPerSecond, false, maxPerSecond},
		{"messages_per_minute", r.MessagesPerMinute, true, maxPerMinute},
		{"messages_per_hour", r.MessagesPerHour, true, maxPerHour},
		{"connections_per_minute", r.ConnectionsPerMinute, false, maxConnectionsPerMin},
	}
	for _, f := range rates {
		if f.v == nil {
			continue
		}
		v := *f.v
		switch {
		case f.zeroOK && v == 0:
		case !(v > 0 && v <= f.maxValue):
			lo := "above 0"
			if f.zeroOK {
				lo = "0 (no limit) or above"
			}
			return layer{}, invalid(path+"."+f.name, "must be %s and at most %g, got %g", lo, f.maxValue, v)
		}
	}
	return layer{
		maxConnections:           r.MaxConnections,
		maxMessagesPerConnection: r.MaxMessagesPerConnection,
		messagesPerSecond:        r.MessagesPerSecond,
		messagesPerMinute:        r.MessagesPerMinute,
		messagesPerHour:          r.MessagesPerHour,
		connectionsPerMinute:     r.ConnectionsPerMinute,
	}, nil
}
