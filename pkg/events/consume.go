package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// ErrMalformed marks a message that can never be processed: it goes to the
// dead-letter subject with the reason and is not redelivered. Handlers wrap
// it (fmt.Errorf("%w: ...", events.ErrMalformed)) for semantic failures;
// the consumer uses it for payloads that do not decode.
var ErrMalformed = errors.New("events: malformed message")

// RetryError asks for the message to be redelivered after a delay without
// counting as a failure of the service.
type RetryError struct {
	After time.Duration
	Err   error
}

func (e *RetryError) Error() string {
	return fmt.Sprintf("events: retry in %s: %v", e.After, e.Err)
}

func (e *RetryError) Unwrap() error { return e.Err }

// Retry returns an error that makes the consumer redeliver the message
// after d.
func Retry(d time.Duration, err error) error { return &RetryError{After: d, Err: err} }

// Msg is one decoded message handed to a handler.
type Msg[T proto.Message] struct {
	Payload T
	Subject string
	Header  nats.Header
	// Delivered counts deliveries of this message, 1 the first time.
	Delivered uint64
	// Sequence is the message's sequence in its stream.
	Sequence uint64
	raw      jetstream.Msg
}

// InProgress resets the redelivery timer, for handlers that take long.
func (m *Msg[T]) InProgress() error { return m.raw.InProgress() }

// Handler processes one message. Returning nil acknowledges it; an error
// wrapping ErrMalformed dead-letters it; a *RetryError redelivers it after
// its delay; any other error redelivers it with backoff.
type Handler[T proto.Message] func(ctx context.Context, m *Msg[T]) error

// Consumer runs a worker pool over one durable consumer.
type Consumer[T proto.Message] struct {
	// JS is the JetStream handle.
	JS jetstream.JetStream
	// Stream and Name identify the durable consumer (created by Setup).
	Stream, Name string
	// New returns an empty payload to decode into.
	New func() T
	// Handle processes each message.
	Handle Handler[T]
	// Workers is the number of messages handled at once (default 1).
	Workers int
	// Logger receives one line per failure.
	Logger *slog.Logger
	// OnDead, when set, is called after a message was dead-lettered.
	OnDead func(subject, reason string)
}

// backoff for handler failures that did not ask for a specific delay.
func backoff(delivered uint64) time.Duration {
	d := time.Second << min(delivered, 8)
	return min(d, 5*time.Minute)
}

// Run consumes until ctx is cancelled, then drains: it stops fetching,
// lets in-flight handlers finish, and gives messages fetched but not yet
// started back to the stream with a NAK so nothing waits for AckWait.
// It returns nil after a clean drain.
func (c *Consumer[T]) Run(ctx context.Context) error {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cons, err := c.JS.Consumer(ctx, c.Stream, c.Name)
	if err != nil {
		return fmt.Errorf("events: consumer %s/%s: %w", c.Stream, c.Name, err)
	}
	workers := max(c.Workers, 1)
	it, err := cons.Messages(jetstream.PullMaxMessages(max(2*workers, 16)))
	if err != nil {
		return fmt.Errorf("events: consumer %s/%s: %w", c.Stream, c.Name, err)
	}
	work := make(chan jetstream.Msg)
	// handleCtx outlives ctx so that in-flight work finishes during drain.
	handleCtx := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for m := range work {
				c.process(handleCtx, log, m)
			}
		})
	}
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			it.Drain()
		case <-stopped:
		}
	}()
	var runErr error
	for {
		m, err := it.Next()
		if err != nil {
			if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				runErr = fmt.Errorf("events: consumer %s/%s: %w", c.Stream, c.Name, err)
				it.Stop()
			}
			break
		}
		if ctx.Err() != nil {
			// Fetched after the drain began: hand it back at once.
			_ = m.Nak()
			continue
		}
		select {
		case work <- m:
		case <-ctx.Done():
			_ = m.Nak()
		}
	}
	close(stopped)
	close(work)
	wg.Wait()
	// The last acks leave before the caller closes the connection.
	if nc := c.JS.Conn(); nc != nil && !nc.IsClosed() {
		if err := nc.FlushTimeout(5 * time.Second); err != nil {
			log.Warn("acks not flushed", "consumer", c.Name, "err", err)
		}
	}
	return runErr
}

func (c *Consumer[T]) process(ctx context.Context, log *slog.Logger, raw jetstream.Msg) {
	meta, _ := raw.Metadata()
	delivered, seq := uint64(1), uint64(0)
	if meta != nil {
		delivered, seq = meta.NumDelivered, meta.Sequence.Stream
	}
	payload := c.New()
	if err := proto.Unmarshal(raw.Data(), payload); err != nil {
		c.deadLetter(ctx, log, raw, fmt.Sprintf("decode %s: %v", payload.ProtoReflect().Descriptor().FullName(), err))
		return
	}
	if want, got := string(payload.ProtoReflect().Descriptor().FullName()), raw.Headers().Get(mailwavev1.HeaderType); got != "" && got != want {
		c.deadLetter(ctx, log, raw, fmt.Sprintf("payload type %s, want %s", got, want))
		return
	}
	if id := raw.Headers().Get(mailwavev1.HeaderTrace); id != "" {
		ctx = WithTrace(ctx, id)
	}
	m := &Msg[T]{Payload: payload, Subject: raw.Subject(), Header: raw.Headers(), Delivered: delivered, Sequence: seq, raw: raw}
	err := c.Handle(ctx, m)
	var retry *RetryError
	switch {
	case err == nil:
		// A plain ack, not a double one: waiting for the server's
		// confirmation cost every message a round trip and a reply, in
		// every service. An ack that is lost (a connection cut at that
		// instant) only brings the message back after AckWait, and every
		// handler is safe to run twice; Run flushes the acks before it
		// returns.
		if err := raw.Ack(); err != nil {
			log.Warn("ack failed", "consumer", c.Name, "subject", raw.Subject(), "err", err)
		}
	case errors.Is(err, ErrMalformed):
		c.deadLetter(ctx, log, raw, err.Error())
	case errors.As(err, &retry):
		_ = raw.NakWithDelay(retry.After)
	default:
		log.Warn("handler failed", "consumer", c.Name, "subject", raw.Subject(), "delivered", delivered, "err", err)
		_ = raw.NakWithDelay(backoff(delivered))
	}
}

// deadLetter stores the original bytes on the dead-letter subject with the
// reason, then terminates the message so it is never redelivered. If the
// dead letter cannot be stored, the message is NAKed instead: it is never
// dropped without a trace.
func (c *Consumer[T]) deadLetter(ctx context.Context, log *slog.Logger, raw jetstream.Msg, reason string) {
	dead := nats.NewMsg(mailwavev1.SubjectDead(c.Stream))
	dead.Data = raw.Data()
	for k, v := range raw.Headers() {
		if k == mailwavev1.HeaderMsgID {
			continue
		}
		dead.Header[k] = v
	}
	dead.Header.Set(mailwavev1.HeaderDeadReason, reason)
	dead.Header.Set(mailwavev1.HeaderDeadSubject, raw.Subject())
	dead.Header.Set(mailwavev1.HeaderDeadConsumer, c.Name)
	if _, err := c.JS.PublishMsg(ctx, dead); err != nil {
		log.Error("dead letter not stored", "consumer", c.Name, "subject", raw.Subject(), "err", err)
		_ = raw.NakWithDelay(backoff(1))
		return
	}
	log.Warn("message dead-lettered", "consumer", c.Name, "subject", raw.Subject(), "reason", reason)
	_ = raw.Term()
	if c.OnDead != nil {
		c.OnDead(raw.Subject(), reason)
	}
}
