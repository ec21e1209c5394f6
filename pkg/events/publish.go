package events

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// ErrPublish wraps every failure to store a message in JetStream.
var ErrPublish = errors.New("events: publish")

type traceKey struct{}

// WithTrace returns a context that carries trace id; messages published
// with it carry the id in the Mailwave-Trace-Id header.
func WithTrace(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, traceKey{}, id)
}

// TraceFrom returns the trace id ctx carries, or "".
func TraceFrom(ctx context.Context) string {
	id, _ := ctx.Value(traceKey{}).(string)
	return id
}

// NewID returns a random 128-bit identifier in hex, for trace, event and
// message ids.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+).
	return hex.EncodeToString(b[:])
}

// Publisher stores protobuf messages in JetStream.
type Publisher struct {
	js jetstream.JetStream
}

// NewPublisher returns a Publisher on js.
func NewPublisher(js jetstream.JetStream) *Publisher { return &Publisher{js: js} }

// PublishOption adjusts one publish.
type PublishOption func(*nats.Msg)

// WithMsgID sets the Nats-Msg-Id header: JetStream stores a message with an
// id it has already seen within the stream's duplicate window only once.
func WithMsgID(id string) PublishOption {
	return func(m *nats.Msg) {
		if id != "" {
			m.Header.Set(mailwavev1.HeaderMsgID, id)
		}
	}
}

// WithHeader sets an extra header.
func WithHeader(key, value string) PublishOption {
	return func(m *nats.Msg) { m.Header.Set(key, value) }
}

// Message builds the NATS message for payload: the protobuf bytes with the
// type and trace headers.
func Message(ctx context.Context, subject string, payload proto.Message, opts ...PublishOption) (*nats.Msg, error) {
	data, err := proto.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: marshal %s: %w", ErrPublish, payload.ProtoReflect().Descriptor().FullName(), err)
	}
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(mailwavev1.HeaderType, string(payload.ProtoReflect().Descriptor().FullName()))
	if id := TraceFrom(ctx); id != "" {
		m.Header.Set(mailwavev1.HeaderTrace, id)
	}
	for _, o := range opts {
		o(m)
	}
	return m, nil
}

// Publish stores payload on subject and returns once JetStream has
// acknowledged it. The ack's Duplicate field tells whether the message id
// had been seen before. Errors wrap ErrPublish.
func (p *Publisher) Publish(ctx context.Context, subject string, payload proto.Message, opts ...PublishOption) (*jetstream.PubAck, error) {
	m, err := Message(ctx, subject, payload, opts...)
	if err != nil {
		return nil, err
	}
	ack, err := p.js.PublishMsg(ctx, m)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPublish, subject, err)
	}
	return ack, nil
}

// PublishAsync queues payload for storage without waiting; the returned
// future resolves when JetStream acknowledges it. Errors wrap ErrPublish.
func (p *Publisher) PublishAsync(ctx context.Context, subject string, payload proto.Message, opts ...PublishOption) (jetstream.PubAckFuture, error) {
	m, err := Message(ctx, subject, payload, opts...)
	if err != nil {
		return nil, err
	}
	f, err := p.js.PublishMsgAsync(m)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPublish, subject, err)
	}
	return f, nil
}

// JetStream returns the JetStream handle the publisher uses.
func (p *Publisher) JetStream() jetstream.JetStream { return p.js }
