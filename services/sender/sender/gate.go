package sender

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mailwave/mailwave/pkg/ratelimit"
	"github.com/mailwave/mailwave/pkg/shaping"
)

// errShapedWait is the cause logged when a message waits for a limit.
var errShapedWait = errors.New("sender: waiting for a rate or connection limit")

// shapedError says a new connection may not be opened yet.
type shapedError struct {
	after time.Duration
	// limit names what held the message, the "limit" label of
	// mailwave_sender_shaped_total.
	limit string
}

// What held a message back.
const (
	limitRate        = "rate"        // its message rate
	limitConnections = "connections" // its connection cap or connection rate
	limitPolicy      = "policy"      // a shaping policy of zero volume
	limitUnavailable = "unavailable" // Redis did not answer
)

func (e *shapedError) Error() string {
	return fmt.Sprintf("sender: connection limit, retry in %s", e.after)
}

// connGate admits new SMTP connections of one source IP to one provider:
// at most MaxConnections at once across every replica (leases in Redis),
// and at most ConnectionsPerMinute new ones.
type connGate struct {
	limiter *ratelimit.Limiter
	keeper  *ratelimit.Keeper
	key     string
	limits  shaping.Limits
	// want, when set, tells the other replicas that this one waits for a
	// slot of key, so that one of them ends an idle session (see
	// sessions.yield).
	want func(ctx context.Context, key string)
}

// open asks for a connection slot. It returns the lease to release when the
// connection closes (kept alive meanwhile), or a *shapedError when none is
// free now.
func (g *connGate) open(ctx context.Context) (*ratelimit.Kept, error) {
	if w := g.limits.ConnectionWindows(); len(w) > 0 {
		res, err := g.limiter.Allow(ctx, "conn-rate:"+g.key, 1, w...)
		if err != nil {
			return nil, &shapedError{after: time.Second, limit: limitUnavailable}
		}
		if !res.Allowed {
			return nil, &shapedError{after: res.RetryAfter, limit: limitConnections}
		}
	}
	if g.limits.MaxConnections <= 0 {
		return nil, nil
	}
	kept, gr, err := g.keeper.Acquire(ctx, "conn:"+g.key, g.limits.MaxConnections)
	if err != nil {
		return nil, &shapedError{after: time.Second, limit: limitUnavailable}
	}
	if kept == nil {
		if g.want != nil {
			g.want(ctx, g.key)
		}
		// A slot frees when a session ends; look again soon rather than
		// at the oldest lease's expiry.
		return nil, &shapedError{after: min(gr.RetryAfter, 500*time.Millisecond), limit: limitConnections}
	}
	return kept, nil
}

// maxPerConnection is the policy's per-session message cap.
func (g *connGate) maxPerConnection() int { return g.limits.MaxMessagesPerConnection }
