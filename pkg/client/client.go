// Package client is the Go client for services that publish mail to
// Mailwave: Send stores a send request in JetStream and returns once it is
// stored (so an acknowledged request is never lost), and Events follows the
// outcome of a request on the public event feed.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/events"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// Errors returned by Send.
var (
	// ErrInvalidRequest: the request misses something the planner needs.
	ErrInvalidRequest = errors.New("client: invalid send request")
)

// Client publishes send requests and follows their events.
type Client struct {
	js  jetstream.JetStream
	pub *events.Publisher
}

// New returns a Client on an open NATS connection.
func New(nc *nats.Conn) (*Client, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("client: jetstream: %w", err)
	}
	return &Client{js: js, pub: events.NewPublisher(js)}, nil
}

// Receipt says where a request was stored.
type Receipt struct {
	Stream   string
	Sequence uint64
	// Duplicate is true when a request with the same idempotency key had
	// already been stored; nothing new will be sent.
	Duplicate bool
}

// Validate checks what every send request needs. Errors wrap
// ErrInvalidRequest.
func Validate(req *mailwavev1.SendRequest) error {
	switch {
	case req.GetIdempotencyKey() == "":
		return fmt.Errorf("%w: idempotency_key is required", ErrInvalidRequest)
	case req.GetTenant() == "":
		return fmt.Errorf("%w: tenant is required", ErrInvalidRequest)
	case req.GetBrand() == "":
		return fmt.Errorf("%w: brand is required", ErrInvalidRequest)
	case len(req.GetRecipients()) == 0 && req.GetAudience() == nil:
		return fmt.Errorf("%w: recipients or audience is required", ErrInvalidRequest)
	case len(req.GetRecipients()) > 0 && req.GetAudience() != nil:
		return fmt.Errorf("%w: recipients and audience are exclusive", ErrInvalidRequest)
	case req.GetRaw() == nil && req.GetTemplate() == nil:
		return fmt.Errorf("%w: content (raw or template) is required", ErrInvalidRequest)
	case req.GetPriority() == mailwavev1.Priority_PRIORITY_TRANSACTIONAL && (req.GetAudience() != nil || len(req.GetRecipients()) != 1):
		// The transactional lane is for one-to-one mail; many recipients
		// are a campaign, planned in waves on the bulk lane.
		return fmt.Errorf("%w: a transactional request has exactly one recipient", ErrInvalidRequest)
	}
	return nil
}

// Send stores req and returns once JetStream has acknowledged it. The
// request's idempotency key is the de-duplication id: sending the same key
// again within the duplicate window stores nothing and reports Duplicate.
// Errors wrap ErrInvalidRequest or events.ErrPublish.
func (c *Client) Send(ctx context.Context, req *mailwavev1.SendRequest) (*Receipt, error) {
	if err := Validate(req); err != nil {
		return nil, err
	}
	if req.RequestedAt == nil {
		req = proto.CloneOf(req)
		req.RequestedAt = timestamppb.Now()
	}
	if events.TraceFrom(ctx) == "" {
		ctx = events.WithTrace(ctx, events.NewID())
	}
	subject := mailwavev1.SubjectSend(mailwavev1.LaneFor(req.GetPriority()), req.GetTenant())
	ack, err := c.pub.Publish(ctx, subject, req, events.WithMsgID(req.GetIdempotencyKey()))
	if err != nil {
		return nil, err
	}
	return &Receipt{Stream: ack.Stream, Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// PutAudience stores a campaign audience (NDJSON: one {"address": ...,
// "vars": {...}, "external_id": ...} per line; or CSV with a header row
// naming an "address" or "email" column) in the audiences object store
// under name, and returns the reference a SendRequest carries. Errors
// wrap events.ErrPublish.
func (c *Client) PutAudience(ctx context.Context, name string, format mailwavev1.AudienceFormat, r io.Reader) (*mailwavev1.AudienceRef, error) {
	store, err := c.js.ObjectStore(ctx, mailwavev1.ObjectStoreAudiences)
	if err != nil {
		return nil, fmt.Errorf("%w: audiences: %w", events.ErrPublish, err)
	}
	if _, err := store.Put(ctx, jetstream.ObjectMeta{Name: name}, r); err != nil {
		return nil, fmt.Errorf("%w: audience %s: %w", events.ErrPublish, name, err)
	}
	return &mailwavev1.AudienceRef{Bucket: mailwavev1.ObjectStoreAudiences, Object: name, Format: format}, nil
}

// Events yields the events of the request with idempotency key requestID
// for tenant, from since on, as they are published, until ctx is done or
// the caller stops iterating. A decode failure is yielded as an error and
// iteration goes on.
func (c *Client) Events(ctx context.Context, tenant, requestID string, since time.Time) iter.Seq2[*mailwavev1.DeliveryEvent, error] {
	return func(yield func(*mailwavev1.DeliveryEvent, error) bool) {
		cons, err := c.js.OrderedConsumer(ctx, mailwavev1.StreamEvents, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{"mail.event.*." + mailwavev1.Token(tenant)},
			DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
			OptStartTime:   &since,
		})
		if err != nil {
			yield(nil, fmt.Errorf("client: follow events: %w", err))
			return
		}
		it, err := cons.Messages()
		if err != nil {
			yield(nil, fmt.Errorf("client: follow events: %w", err))
			return
		}
		defer it.Stop()
		stop := context.AfterFunc(ctx, it.Stop)
		defer stop()
		for {
			m, err := it.Next()
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					yield(nil, fmt.Errorf("client: follow events: %w", err))
				}
				return
			}
			ev := &mailwavev1.DeliveryEvent{}
			if t := m.Headers().Get(mailwavev1.HeaderType); t != "" && t != string(ev.ProtoReflect().Descriptor().FullName()) {
				continue // policy changes and alerts share the feed
			}
			if err := proto.Unmarshal(m.Data(), ev); err != nil {
				if !yield(nil, fmt.Errorf("client: decode event %s: %w", m.Subject(), err)) {
					return
				}
				continue
			}
			if ev.GetRequestId() != requestID {
				continue
			}
			if !yield(ev, nil) {
				return
			}
		}
	}
}

// IsTerminal reports whether kind ends a recipient's message for good.
func IsTerminal(kind mailwavev1.EventKind) bool {
	switch kind {
	case mailwavev1.EventKind_EVENT_KIND_DELIVERED, mailwavev1.EventKind_EVENT_KIND_BOUNCED,
		mailwavev1.EventKind_EVENT_KIND_EXPIRED, mailwavev1.EventKind_EVENT_KIND_SUPPRESSED,
		mailwavev1.EventKind_EVENT_KIND_DROPPED:
		return true
	}
	return false
}
