package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// Topology sizes the JetStream objects Setup creates.
type Topology struct {
	// Replicas of every stream and bucket: 1 for development, 3 on a
	// production cluster.
	Replicas int
	// Memory puts streams in memory instead of files (tests only).
	Memory bool
	// EventsMaxAge is how long the public outcome feed is kept.
	EventsMaxAge time.Duration
	// InboundMaxAge is how long raw bounces and complaints are kept for
	// inspection.
	InboundMaxAge time.Duration
	// DispatchMaxAge bounds how long a dispatch message can wait; it must
	// exceed the longest max age of any mail stream.
	DispatchMaxAge time.Duration
	// AckWait, when set, replaces every durable consumer's own: how long
	// a message fetched by a replica that died waits before it is
	// delivered to another. Every service must use the same value, since
	// each one creates the consumers at start.
	AckWait time.Duration
}

// DefaultTopology is a single-node topology on file storage.
func DefaultTopology() Topology {
	return Topology{
		Replicas:       1,
		EventsMaxAge:   14 * 24 * time.Hour,
		InboundMaxAge:  30 * 24 * time.Hour,
		DispatchMaxAge: 7 * 24 * time.Hour,
	}
}

// Streams returns the stream configurations of the contract.
func (t Topology) Streams() []jetstream.StreamConfig {
	storage := jetstream.FileStorage
	if t.Memory {
		storage = jetstream.MemoryStorage
	}
	r := max(t.Replicas, 1)
	return []jetstream.StreamConfig{
		{
			Name:        mailwavev1.StreamSend,
			Description: "send requests, de-duplicated by idempotency key",
			Subjects:    []string{mailwavev1.SubjectSendAll},
			Storage:     storage,
			Replicas:    r,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      7 * 24 * time.Hour,
			Duplicates:  mailwavev1.DuplicateWindow,
		},
		{
			Name:        mailwavev1.StreamDispatch,
			Description: "one message per recipient, kept until it reaches a terminal state",
			Subjects:    []string{mailwavev1.SubjectDispatchAll, mailwavev1.SubjectRetryAll, mailwavev1.SubjectDispatchTransactionalAll},
			Storage:     storage,
			Replicas:    r,
			Retention:   jetstream.WorkQueuePolicy,
			MaxAge:      t.DispatchMaxAge,
			Duplicates:  mailwavev1.DuplicateWindow,
			// Retries are scheduled by republishing with Nats-TTL and
			// Nats-Schedule headers.
			AllowMsgTTL:       true,
			AllowMsgSchedules: true,
		},
		{
			Name:        mailwavev1.StreamEvents,
			Description: "the public outcome feed",
			Subjects:    []string{mailwavev1.SubjectEventAll},
			Storage:     storage,
			Replicas:    r,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      t.EventsMaxAge,
			Duplicates:  time.Hour,
		},
		{
			Name:        mailwavev1.StreamInbound,
			Description: "raw DSN, FBL and reply messages as received",
			Subjects:    []string{mailwavev1.SubjectInboundAll},
			Storage:     storage,
			Replicas:    r,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      t.InboundMaxAge,
			Duplicates:  time.Hour,
		},
		{
			Name:        mailwavev1.StreamReports,
			Description: "parsed bounce and complaint reports",
			Subjects:    []string{mailwavev1.SubjectReportAll},
			Storage:     storage,
			Replicas:    r,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      t.InboundMaxAge,
			Duplicates:  time.Hour,
		},
		{
			Name:        mailwavev1.StreamDead,
			Description: "messages no service could decode, with the reason",
			Subjects:    []string{mailwavev1.SubjectDeadAll},
			Storage:     storage,
			Replicas:    r,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      t.InboundMaxAge,
		},
	}
}

// ConsumerSpec is a durable consumer and the stream it reads.
type ConsumerSpec struct {
	Stream string
	Config jetstream.ConsumerConfig
}

// Consumers returns the durable consumers of the contract, by name.
func (t Topology) Consumers() map[string]ConsumerSpec {
	durable := func(stream, name string, filters []string, ackWait time.Duration, pending int) ConsumerSpec {
		if t.AckWait > 0 {
			ackWait = t.AckWait
		}
		return ConsumerSpec{Stream: stream, Config: jetstream.ConsumerConfig{
			Durable:        name,
			FilterSubjects: filters,
			AckPolicy:      jetstream.AckExplicitPolicy,
			AckWait:        ackWait,
			DeliverPolicy:  jetstream.DeliverAllPolicy,
			MaxAckPending:  pending,
			Replicas:       max(t.Replicas, 1),
		}}
	}
	return map[string]ConsumerSpec{
		// Transactional mail has a lane of its own end to end: its own
		// consumer of the SEND stream, its own dispatch subjects and its
		// own sender consumer, so it never waits behind a campaign.
		mailwavev1.ConsumerPlanner: durable(mailwavev1.StreamSend, mailwavev1.ConsumerPlanner,
			[]string{mailwavev1.SubjectSendLane(mailwavev1.LaneBulk)}, time.Minute, 1000),
		mailwavev1.ConsumerPlannerTransactional: durable(mailwavev1.StreamSend, mailwavev1.ConsumerPlannerTransactional,
			[]string{mailwavev1.SubjectSendLane(mailwavev1.LaneTransactional)}, time.Minute, 1000),
		// The planner counts outcomes (campaign progress) and applies
		// preference updates: the delivery events of the other services
		// only. Not its own (accepted, suppressed, dropped: it counts
		// them as it stores them, which spares every message a second
		// delivery), nor policy changes or alerts.
		mailwavev1.ConsumerPlannerEvents: durable(mailwavev1.StreamEvents, mailwavev1.ConsumerPlannerEvents,
			plannerEventSubjects(), time.Minute, 5000),
		mailwavev1.ConsumerSender: durable(mailwavev1.StreamDispatch, mailwavev1.ConsumerSender,
			[]string{mailwavev1.SubjectDispatchAll}, 2*time.Minute, 20000),
		mailwavev1.ConsumerSenderTransactional: durable(mailwavev1.StreamDispatch, mailwavev1.ConsumerSenderTransactional,
			[]string{mailwavev1.SubjectDispatchTransactionalAll}, 2*time.Minute, 1000),
		mailwavev1.ConsumerInboundDSN: durable(mailwavev1.StreamInbound, mailwavev1.ConsumerInboundDSN,
			[]string{mailwavev1.SubjectInbound(mailwavev1.InboundKind_INBOUND_KIND_DSN),
				mailwavev1.SubjectInbound(mailwavev1.InboundKind_INBOUND_KIND_REPLY)}, time.Minute, 1000),
		mailwavev1.ConsumerInboundDSNEvents: durable(mailwavev1.StreamEvents, mailwavev1.ConsumerInboundDSNEvents,
			[]string{"mail.event." + mailwavev1.EventKindWord(mailwavev1.EventKind_EVENT_KIND_DELIVERED) + ".>"}, time.Minute, 5000),
		mailwavev1.ConsumerFBLParser: durable(mailwavev1.StreamInbound, mailwavev1.ConsumerFBLParser,
			[]string{mailwavev1.SubjectInbound(mailwavev1.InboundKind_INBOUND_KIND_FBL)}, time.Minute, 1000),
		// The monitor reads outcomes only: policy changes and alerts share
		// the EVENTS stream but are not DeliveryEvents.
		mailwavev1.ConsumerReputationMonitor: durable(mailwavev1.StreamEvents, mailwavev1.ConsumerReputationMonitor,
			reputationSubjects(), time.Minute, 10000),
	}
}

// reputationSubjects are the outcome subjects the reputation monitor
// counts.
func reputationSubjects() []string {
	var out []string
	for _, k := range []mailwavev1.EventKind{mailwavev1.EventKind_EVENT_KIND_DELIVERED, mailwavev1.EventKind_EVENT_KIND_DEFERRED,
		mailwavev1.EventKind_EVENT_KIND_BOUNCED, mailwavev1.EventKind_EVENT_KIND_COMPLAINED, mailwavev1.EventKind_EVENT_KIND_UNSUBSCRIBED} {
		out = append(out, "mail.event."+mailwavev1.EventKindWord(k)+".>")
	}
	return out
}

// plannerEventSubjects are the subjects of every DeliveryEvent kind
// another service than the planner publishes.
func plannerEventSubjects() []string {
	var out []string
	for k := mailwavev1.EventKind_EVENT_KIND_ACCEPTED; k <= mailwavev1.EventKind_EVENT_KIND_UNSUBSCRIBED; k++ {
		switch k {
		case mailwavev1.EventKind_EVENT_KIND_ACCEPTED, mailwavev1.EventKind_EVENT_KIND_SUPPRESSED, mailwavev1.EventKind_EVENT_KIND_DROPPED:
			continue
		}
		out = append(out, "mail.event."+mailwavev1.EventKindWord(k)+".>")
	}
	return out
}

// Buckets returns the key-value buckets of the contract.
func (t Topology) Buckets() []jetstream.KeyValueConfig {
	storage := jetstream.FileStorage
	if t.Memory {
		storage = jetstream.MemoryStorage
	}
	r := max(t.Replicas, 1)
	return []jetstream.KeyValueConfig{
		{Bucket: mailwavev1.BucketSuppressions, Description: "suppressed recipients per brand",
			History: 1, Storage: storage, Replicas: r},
		{Bucket: mailwavev1.BucketPolicy, Description: "pause and throttle state every sender watches",
			History: 10, Storage: storage, Replicas: r},
		{Bucket: mailwavev1.BucketAudits, Description: "latest authentication audit of every sending domain",
			History: 5, Storage: storage, Replicas: r},
		{Bucket: mailwavev1.BucketMessages, Description: "what the platform remembers of every planned message",
			History: 1, TTL: mailwavev1.MessagesTTL, Storage: storage, Replicas: r},
	}
}

// ObjectStores returns the object stores of the contract.
func (t Topology) ObjectStores() []jetstream.ObjectStoreConfig {
	storage := jetstream.FileStorage
	if t.Memory {
		storage = jetstream.MemoryStorage
	}
	return []jetstream.ObjectStoreConfig{
		{Bucket: mailwavev1.ObjectStoreAudiences, Description: "campaign audiences",
			Storage: storage, Replicas: max(t.Replicas, 1)},
	}
}

// ErrSetup wraps every failure of Setup.
var ErrSetup = errors.New("events: setup")

// Setup creates or updates every stream, durable consumer, bucket and
// object store of the topology. It is idempotent, so every service calls it
// at start. Errors wrap ErrSetup.
func Setup(ctx context.Context, js jetstream.JetStream, t Topology) error {
	for _, sc := range t.Streams() {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("%w: stream %s: %w", ErrSetup, sc.Name, err)
		}
	}
	for name, cs := range t.Consumers() {
		if _, err := js.CreateOrUpdateConsumer(ctx, cs.Stream, cs.Config); err != nil {
			return fmt.Errorf("%w: consumer %s: %w", ErrSetup, name, err)
		}
	}
	for _, kc := range t.Buckets() {
		if _, err := js.CreateOrUpdateKeyValue(ctx, kc); err != nil {
			return fmt.Errorf("%w: bucket %s: %w", ErrSetup, kc.Bucket, err)
		}
	}
	for _, oc := range t.ObjectStores() {
		if _, err := js.CreateOrUpdateObjectStore(ctx, oc); err != nil {
			return fmt.Errorf("%w: object store %s: %w", ErrSetup, oc.Bucket, err)
		}
	}
	return nil
}
