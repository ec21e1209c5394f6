package events_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

func TestSetupIsIdempotent(t *testing.T) {
	s := testenv.NATS(t)
	_, js := testenv.JetStream(t, s)
	ctx := testenv.Context(t)
	if err := events.Setup(ctx, js, events.DefaultTopology()); err != nil {
		t.Fatalf("second setup: %v", err)
	}
	for _, name := range []string{mailwavev1.StreamSend, mailwavev1.StreamDispatch, mailwavev1.StreamEvents,
		mailwavev1.StreamInbound, mailwavev1.StreamReports, mailwavev1.StreamDead} {
		if _, err := js.Stream(ctx, name); err != nil {
			t.Errorf("stream %s: %v", name, err)
		}
	}
	for _, b := range []string{mailwavev1.BucketSuppressions, mailwavev1.BucketPolicy} {
		if _, err := js.KeyValue(ctx, b); err != nil {
			t.Errorf("bucket %s: %v", b, err)
		}
	}
	if _, err := js.ObjectStore(ctx, mailwavev1.ObjectStoreAudiences); err != nil {
		t.Errorf("object store: %v", err)
	}
}

func TestPublishDeduplicatesByMsgID(t *testing.T) {
	s := testenv.NATS(t)
	_, js := testenv.JetStream(t, s)
	ctx := events.WithTrace(testenv.Context(t), "trace-1")
	pub := events.NewPublisher(js)
	req := &mailwavev1.SendRequest{IdempotencyKey: "k1", Tenant: "acme"}
	subj := mailwavev1.SubjectSend(mailwavev1.LaneBulk, "acme")
	a1, err := pub.Publish(ctx, subj, req, events.WithMsgID("k1"))
	if err != nil {
		t.Fatal(err)
	}
	a2, err := pub.Publish(ctx, subj, req, events.WithMsgID("k1"))
	if err != nil {
		t.Fatal(err)
	}
	if a1.Duplicate || !a2.Duplicate || a1.Sequence != a2.Sequence {
		t.Fatalf("acks %+v %+v: want the second to be a duplicate of the first", a1, a2)
	}
	m, err := lastMsg(ctx, t, js, mailwavev1.StreamSend, subj)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(mailwavev1.HeaderTrace); got != "trace-1" {
		t.Errorf("trace header %q", got)
	}
	if got := m.Header.Get(mailwavev1.HeaderType); got != "mailwave.v1.SendRequest" {
		t.Errorf("type header %q", got)
	}
}

// run starts a consumer on the planner's durable and returns a cancel that
// waits for it to drain.
func run(t *testing.T, js jetstream.JetStream, h events.Handler[*mailwavev1.SendRequest], dead func(string, string)) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &events.Consumer[*mailwavev1.SendRequest]{
		JS: js, Stream: mailwavev1.StreamSend, Name: mailwavev1.ConsumerPlanner,
		New: func() *mailwavev1.SendRequest { return &mailwavev1.SendRequest{} }, Handle: h, Workers: 4, OnDead: dead,
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	}
	t.Cleanup(func() {
		if ctx.Err() == nil {
			stop()
		}
	})
	return stop
}

func TestMalformedGoesToDeadLetterOnce(t *testing.T) {
	s := testenv.NATS(t)
	nc, js := testenv.JetStream(t, s)
	ctx := testenv.Context(t)
	var handled, deadCalls atomic.Int32
	run(t, js, func(ctx context.Context, m *events.Msg[*mailwavev1.SendRequest]) error {
		handled.Add(1)
		if m.Payload.GetTenant() == "" {
			return errors.New("unexpected empty payload")
		}
		return nil
	}, func(string, string) { deadCalls.Add(1) })

	// Garbage bytes that are not a protobuf message.
	bad := nats.NewMsg(mailwavev1.SubjectSend(mailwavev1.LaneBulk, "acme"))
	bad.Data = []byte{0xff, 0xff, 0xff, 0x01}
	if _, err := js.PublishMsg(ctx, bad); err != nil {
		t.Fatal(err)
	}
	// A valid request after it is still processed: the consumer keeps going.
	if _, err := events.NewPublisher(js).Publish(ctx, mailwavev1.SubjectSend(mailwavev1.LaneBulk, "acme"),
		&mailwavev1.SendRequest{IdempotencyKey: "ok", Tenant: "acme"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return handled.Load() == 1 && deadCalls.Load() == 1 },
		"handled=%d dead=%d", handled.Load(), deadCalls.Load())

	dead, err := lastMsg(ctx, t, js, mailwavev1.StreamDead, mailwavev1.SubjectDead(mailwavev1.StreamSend))
	if err != nil {
		t.Fatalf("dead letter: %v", err)
	}
	if string(dead.Data) != string(bad.Data) {
		t.Errorf("dead letter data %x, want the original %x", dead.Data, bad.Data)
	}
	if dead.Header.Get(mailwavev1.HeaderDeadReason) == "" || dead.Header.Get(mailwavev1.HeaderDeadSubject) != bad.Subject {
		t.Errorf("dead letter headers %v", dead.Header)
	}
	// Terminated, not redelivered: nothing is pending or waiting.
	cons, _ := js.Consumer(ctx, mailwavev1.StreamSend, mailwavev1.ConsumerPlanner)
	testenv.Eventually(t, 5*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0 && info.NumRedelivered == 0
	}, "consumer still has work")
	_ = nc
}

func TestHandlerMalformedAndRetry(t *testing.T) {
	s := testenv.NATS(t)
	_, js := testenv.JetStream(t, s)
	ctx := testenv.Context(t)
	var mu sync.Mutex
	seen := map[string]int{}
	run(t, js, func(ctx context.Context, m *events.Msg[*mailwavev1.SendRequest]) error {
		mu.Lock()
		seen[m.Payload.GetIdempotencyKey()]++
		n := seen[m.Payload.GetIdempotencyKey()]
		mu.Unlock()
		switch m.Payload.GetIdempotencyKey() {
		case "semantic":
			return errors.Join(events.ErrMalformed, errors.New("no recipients"))
		case "retry":
			if n == 1 {
				return events.Retry(10*time.Millisecond, errors.New("later"))
			}
		}
		return nil
	}, nil)
	pub := events.NewPublisher(js)
	for _, k := range []string{"semantic", "retry"} {
		if _, err := pub.Publish(ctx, mailwavev1.SubjectSend(mailwavev1.LaneBulk, "t"), &mailwavev1.SendRequest{IdempotencyKey: k}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return seen["retry"] == 2 && seen["semantic"] == 1
	}, "seen %v", seen)
	dead, err := lastMsg(ctx, t, js, mailwavev1.StreamDead, mailwavev1.SubjectDead(mailwavev1.StreamSend))
	if err != nil {
		t.Fatal(err)
	}
	var got mailwavev1.SendRequest
	if err := proto.Unmarshal(dead.Data, &got); err != nil || got.GetIdempotencyKey() != "semantic" {
		t.Fatalf("dead letter %v %v", &got, err)
	}
}

func TestDrainNaksUnstartedMessages(t *testing.T) {
	s := testenv.NATS(t)
	_, js := testenv.JetStream(t, s)
	ctx := testenv.Context(t)
	release := make(chan struct{})
	var started atomic.Int32
	var finished atomic.Int32
	stop := run(t, js, func(ctx context.Context, m *events.Msg[*mailwavev1.SendRequest]) error {
		started.Add(1)
		<-release
		finished.Add(1)
		return nil
	}, nil)
	pub := events.NewPublisher(js)
	const total = 40
	for i := range total {
		if _, err := pub.Publish(ctx, mailwavev1.SubjectSend(mailwavev1.LaneBulk, "t"),
			&mailwavev1.SendRequest{IdempotencyKey: string(rune('a' + i))}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return started.Load() == 4 }, "started %d", started.Load())
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	close(release)
	<-stopped
	if got := finished.Load(); got != started.Load() {
		t.Fatalf("finished %d of %d started", got, started.Load())
	}
	// Everything not handled went back to the stream at once (NAK, not
	// AckWait): a new consumer run gets exactly the rest, well before the
	// one-minute AckWait would have returned them.
	var mu sync.Mutex
	rest := map[string]bool{}
	run(t, js, func(ctx context.Context, m *events.Msg[*mailwavev1.SendRequest]) error {
		mu.Lock()
		rest[m.Payload.GetIdempotencyKey()] = true
		mu.Unlock()
		return nil
	}, nil)
	testenv.Eventually(t, 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(rest)+int(finished.Load()) == total
	}, "after drain: %d handled first, %d after restart, want %d in all", finished.Load(), len(rest), total)
}

func lastMsg(ctx context.Context, t *testing.T, js jetstream.JetStream, stream, subject string) (*jetstream.RawStreamMsg, error) {
	t.Helper()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	return st.GetLastMsgForSubject(ctx, subject)
}
