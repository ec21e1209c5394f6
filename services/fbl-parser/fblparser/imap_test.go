package fblparser_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailwave/mailwave/pkg/inbound"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/fbl-parser/fblparser"
)

func (p *platform) intakeState(t *testing.T) fblparser.KVState {
	t.Helper()
	kv, err := p.js.CreateOrUpdateKeyValue(testenv.Context(t), jetstream.KeyValueConfig{Bucket: fblparser.BucketIntake})
	if err != nil {
		t.Fatal(err)
	}
	return fblparser.KVState{KV: kv}
}

// inboundFBL counts the reports stored on mail.inbound.fbl.
func (p *platform) inboundFBL(t *testing.T) int {
	return p.countSubject(t, mailwavev1.StreamInbound, mailwavev1.SubjectInbound(mailwavev1.InboundKind_INBOUND_KIND_FBL))
}

// storeCounter is the INBOUND store with a count of Store calls that
// succeeded.
type storeCounter struct {
	next inbound.Store
	n    atomic.Int64
}

func (s *storeCounter) Store(ctx context.Context, m *mailwavev1.InboundMessage) error {
	if err := s.next.Store(ctx, m); err != nil {
		return err
	}
	s.n.Add(1)
	return nil
}

func newIntake(t *testing.T, pl *platform, srv *imapServer, name string) (*fblparser.Intake, *storeCounter) {
	store := &storeCounter{next: inbound.JetStream(pl.pub)}
	return &fblparser.Intake{Mailbox: srv.mailbox(name), Store: store, State: pl.intakeState(t),
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}, store
}

func resolved(t *testing.T, m fblparser.Mailbox) fblparser.Mailbox {
	t.Helper()
	if err := m.Resolve(nil); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestIntakeStoresThenMoves(t *testing.T) {
	pl := newPlatform(t)
	srv := newIMAPServer(t)
	s1 := pl.send(t, "ana@gmail.com", "newsletter", "spring")
	s2 := pl.send(t, "ben@gmail.com", "newsletter", "spring")
	srv.deliver("INBOX", arfAbout(t, s1, "feedback@google.com"))
	srv.deliver("INBOX", readTestdata(t, "not-a-report.eml"))
	srv.deliver("INBOX", arfAbout(t, s2, "feedback@google.com"))

	in, store := newIntake(t, pl, srv, "google")
	in.Mailbox = resolved(t, in.Mailbox)
	n, err := in.Drain(testenv.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	// Every message is stored — the one that is not a report too, so it
	// is kept — and then moved out; none is deleted.
	if n != 3 || store.n.Load() != 3 || pl.inboundFBL(t) != 3 {
		t.Fatalf("stored %d (store calls %d, INBOUND %d), want 3", n, store.n.Load(), pl.inboundFBL(t))
	}
	if got := [3]int{srv.count("INBOX"), srv.count("Processed"), srv.count("Failed")}; got != [3]int{0, 2, 1} {
		t.Fatalf("INBOX, Processed, Failed = %v, want [0 2 1]", got)
	}
	// Nothing new: a second drain stores nothing.
	if n, err := in.Drain(testenv.Context(t)); err != nil || n != 0 {
		t.Fatalf("second drain stored %d, %v", n, err)
	}
}

func TestIntakeRestartNeitherSkipsNorRepeats(t *testing.T) {
	pl := newPlatform(t)
	srv := newIMAPServer(t)
	ctx := testenv.Context(t)
	for _, rcpt := range []string{"a@gmail.com", "b@gmail.com"} {
		srv.deliver("INBOX", arfAbout(t, pl.send(t, rcpt, "newsletter", "spring"), "feedback@google.com"))
	}
	first, store1 := newIntake(t, pl, srv, "google")
	first.Mailbox = resolved(t, first.Mailbox)
	if _, err := first.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	// A new process (same state bucket) after more reports arrived, one of
	// them in a folder we do not read.
	srv.deliver("INBOX", arfAbout(t, pl.send(t, "c@gmail.com", "newsletter", "spring"), "feedback@google.com"))
	second, store2 := newIntake(t, pl, srv, "google")
	second.Mailbox = resolved(t, second.Mailbox)
	if _, err := second.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if store1.n.Load() != 2 || store2.n.Load() != 1 || pl.inboundFBL(t) != 3 {
		t.Fatalf("stored %d then %d (INBOUND %d), want 2 then 1", store1.n.Load(), store2.n.Load(), pl.inboundFBL(t))
	}
	st, err := second.State.Load(ctx, "google")
	if err != nil {
		t.Fatal(err)
	}
	if st.LastUID != 3 || st.UIDValidity == 0 {
		t.Errorf("state %+v, want last UID 3", st)
	}
}

func TestIntakeUIDValidityChange(t *testing.T) {
	pl := newPlatform(t)
	srv := newIMAPServer(t)
	ctx := testenv.Context(t)
	if err := srv.user.Create("Feedback", nil); err != nil {
		t.Fatal(err)
	}
	srv.deliver("Feedback", arfAbout(t, pl.send(t, "a@gmail.com", "newsletter", "spring"), "feedback@google.com"))
	srv.deliver("Feedback", arfAbout(t, pl.send(t, "b@gmail.com", "newsletter", "spring"), "feedback@google.com"))
	in, store := newIntake(t, pl, srv, "google")
	in.Mailbox.Folder = "Feedback"
	in.Mailbox = resolved(t, in.Mailbox)
	if _, err := in.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	// The folder is deleted and made again: its UIDs start over at 1
	// under a new UIDVALIDITY, and the remembered last UID (2) must not
	// hide the new messages 1 and 2 (RFC 9051 §2.3.1.1).
	if err := srv.user.Delete("Feedback"); err != nil {
		t.Fatal(err)
	}
	if err := srv.user.Create("Feedback", nil); err != nil {
		t.Fatal(err)
	}
	srv.deliver("Feedback", arfAbout(t, pl.send(t, "c@gmail.com", "newsletter", "spring"), "feedback@google.com"))
	srv.deliver("Feedback", arfAbout(t, pl.send(t, "d@gmail.com", "newsletter", "spring"), "feedback@google.com"))
	if _, err := in.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if store.n.Load() != 4 || pl.inboundFBL(t) != 4 || srv.count("Feedback") != 0 || srv.count("Processed") != 4 {
		t.Fatalf("stored %d, INBOUND %d, Feedback %d, Processed %d; want 4, 4, 0, 4",
			store.n.Load(), pl.inboundFBL(t), srv.count("Feedback"), srv.count("Processed"))
	}
}

// failingState fails its first Save: the process "dies" after the report
// was stored and before its UID was remembered.
type failingState struct {
	fblparser.StateStore
	failed atomic.Bool
}

var errCrash = errors.New("crash")

func (s *failingState) Save(ctx context.Context, mailbox string, st fblparser.IntakeState) error {
	if s.failed.CompareAndSwap(false, true) {
		return errCrash
	}
	return s.StateStore.Save(ctx, mailbox, st)
}

// TestIntakeCrashBetweenStoreAndMove stops the intake at the two points
// where a crash can leave a report stored but still in the folder — before
// its UID is remembered, and after — restarts it, and checks that the
// report is processed once, moved once, and never lost.
func TestIntakeCrashBetweenStoreAndMove(t *testing.T) {
	for _, point := range []string{"before the state is saved", "after the state is saved"} {
		t.Run(point, func(t *testing.T) {
			pl := newPlatform(t)
			srv := newIMAPServer(t)
			p := newProcessor(pl)
			runConsumer(t, pl, p)
			s := pl.send(t, "ana@gmail.com", "newsletter", "spring")
			srv.deliver("INBOX", arfAbout(t, s, "feedback@google.com"))

			crashed, store1 := newIntake(t, pl, srv, "google")
			crashed.Mailbox = resolved(t, crashed.Mailbox)
			ctx, kill := context.WithCancel(testenv.Context(t))
			if point == "before the state is saved" {
				crashed.State = &failingState{StateStore: crashed.State}
			} else {
				crashed.BeforeMove = func(imap.UID) error {
					kill() // the process dies here
					return errCrash
				}
			}
			if _, err := crashed.Drain(ctx); err == nil {
				t.Fatal("the crashed drain reported no error")
			}
			kill()
			if store1.n.Load() != 1 || srv.count("INBOX") != 1 || srv.count("Processed") != 0 {
				t.Fatalf("after the crash: stored %d, INBOX %d, Processed %d; want 1, 1, 0",
					store1.n.Load(), srv.count("INBOX"), srv.count("Processed"))
			}

			restarted, _ := newIntake(t, pl, srv, "google")
			restarted.Mailbox = resolved(t, restarted.Mailbox)
			if _, err := restarted.Drain(testenv.Context(t)); err != nil {
				t.Fatal(err)
			}
			if srv.count("INBOX") != 0 || srv.count("Processed") != 1 {
				t.Fatalf("after the restart: INBOX %d, Processed %d; want 0, 1", srv.count("INBOX"), srv.count("Processed"))
			}
			// Stored again or not, INBOUND keeps one copy (same message
			// id), and the report acts once.
			if n := pl.inboundFBL(t); n != 1 {
				t.Errorf("INBOUND holds %d copies, want 1", n)
			}
			testenv.Eventually(t, 10*time.Second, func() bool { return pl.suppression(t, "ana@gmail.com") != nil },
				"the complaint was not acted on")
			testenv.Eventually(t, 10*time.Second, func() bool {
				pending, err := pendingFBL(pl)
				return err == nil && pending == 0
			}, "reports left unprocessed")
			if n := pl.complaints(t); n != 1 {
				t.Errorf("%d complained events, want 1", n)
			}
			if n := pl.counter(t, fblparser.DimTenant, "acme"); n != 1 {
				t.Errorf("tenant counter %d, want 1", n)
			}
		})
	}
}

// pendingFBL returns the messages the fbl-parser consumer has not
// acknowledged yet.
func pendingFBL(pl *platform) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pl.js.Consumer(ctx, mailwavev1.StreamInbound, mailwavev1.ConsumerFBLParser)
	if err != nil {
		return 0, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, err
	}
	return int(info.NumPending) + info.NumAckPending, nil
}

func TestIntakeWaitsWithIdleOrPolls(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pollOnly bool
		poll     time.Duration
	}{
		// A poll interval far beyond the test: only IDLE can bring the
		// new report in.
		{"idle", false, time.Hour},
		{"polling", true, 50 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pl := newPlatform(t)
			srv := newIMAPServer(t)
			in, store := newIntake(t, pl, srv, "google")
			in.Mailbox.PollOnly = tc.pollOnly
			in.Mailbox = resolved(t, in.Mailbox)
			in.PollInterval = tc.poll
			srv.deliver("INBOX", arfAbout(t, pl.send(t, "a@gmail.com", "newsletter", "spring"), "feedback@google.com"))
			runIntake(t, in)
			testenv.Eventually(t, 10*time.Second, func() bool { return srv.count("Processed") == 1 }, "first report not moved")
			// The intake now waits; a report arriving meanwhile is taken.
			srv.deliver("INBOX", arfAbout(t, pl.send(t, "b@gmail.com", "newsletter", "spring"), "feedback@google.com"))
			testenv.Eventually(t, 10*time.Second, func() bool { return srv.count("Processed") == 2 }, "second report not moved")
			if store.n.Load() != 2 {
				t.Errorf("stored %d, want 2", store.n.Load())
			}
		})
	}
}

func runIntake(t *testing.T, in *fblparser.Intake) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("intake: %v", err)
		}
	})
}

func TestIntakeReconnects(t *testing.T) {
	pl := newPlatform(t)
	srv := newIMAPServer(t)
	in, store := newIntake(t, pl, srv, "google")
	in.Mailbox = resolved(t, in.Mailbox)
	in.PollInterval = time.Hour
	var failures atomic.Int64
	in.OnFailed = func(error) { failures.Add(1) }
	runIntake(t, in)
	srv.deliver("INBOX", arfAbout(t, pl.send(t, "a@gmail.com", "newsletter", "spring"), "feedback@google.com"))
	testenv.Eventually(t, 10*time.Second, func() bool { return srv.count("Processed") == 1 }, "first report not moved")

	// The server goes away (every connection closed) and comes back on
	// the same address; a report delivered meanwhile is read after the
	// intake reconnects.
	srv.stop()
	testenv.Eventually(t, 10*time.Second, func() bool { return failures.Load() >= 1 }, "the lost connection was not noticed")
	srv.deliver("INBOX", arfAbout(t, pl.send(t, "b@gmail.com", "newsletter", "spring"), "feedback@google.com"))
	srv.start(srv.addr)
	testenv.Eventually(t, 10*time.Second, func() bool { return srv.count("Processed") == 2 }, "report not read after reconnecting")
	if store.n.Load() != 2 {
		t.Errorf("stored %d, want 2", store.n.Load())
	}
}

func TestIntakeLeaseOneReaderAtATime(t *testing.T) {
	pl := newPlatform(t)
	srv := newIMAPServer(t)
	var (
		mu      sync.Mutex
		readers = map[string]int{}
	)
	for _, holder := range []string{"replica-1", "replica-2"} {
		in, _ := newIntake(t, pl, srv, "google")
		in.Mailbox = resolved(t, in.Mailbox)
		in.PollInterval = 50 * time.Millisecond
		in.Lease = &fblparser.Lease{Redis: pl.rdb, Key: fblparser.LeaseKey("google"), Holder: holder, TTL: time.Minute}
		in.OnStored = func(*mailwavev1.InboundMessage) {
			mu.Lock()
			readers[holder]++
			mu.Unlock()
		}
		runIntake(t, in)
	}
	for i, rcpt := range []string{"a@gmail.com", "b@gmail.com", "c@gmail.com", "d@gmail.com"} {
		srv.deliver("INBOX", arfAbout(t, pl.send(t, rcpt, "newsletter", "spring"), "feedback@google.com"))
		testenv.Eventually(t, 10*time.Second, func() bool { return srv.count("Processed") == i+1 }, "report %d not moved", i+1)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(readers) != 1 {
		t.Errorf("reports stored by %v, want one replica only", readers)
	}
}

func TestLease(t *testing.T) {
	pl := newPlatform(t)
	ctx := testenv.Context(t)
	a := &fblparser.Lease{Redis: pl.rdb, Key: fblparser.LeaseKey("google"), Holder: "a", TTL: time.Minute}
	b := &fblparser.Lease{Redis: pl.rdb, Key: fblparser.LeaseKey("google"), Holder: "b", TTL: time.Minute}
	for _, step := range []struct {
		l    *fblparser.Lease
		want bool
	}{{a, true}, {b, false}, {a, true}} {
		if ok, err := step.l.Acquire(ctx); err != nil || ok != step.want {
			t.Fatalf("%s: Acquire = %v, %v; want %v", step.l.Holder, ok, err, step.want)
		}
	}
	// b cannot release a's lease; a can.
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := b.Acquire(ctx); ok {
		t.Fatal("b took a's lease after releasing nothing")
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.Acquire(ctx); err != nil || !ok {
		t.Fatalf("b after a released: %v, %v", ok, err)
	}
}

func TestIntakeTooLargeGoesToFailed(t *testing.T) {
	pl := newPlatform(t)
	srv := newIMAPServer(t)
	big := arfAbout(t, pl.send(t, "a@gmail.com", "newsletter", "spring"), "feedback@google.com")
	big = bytes.Replace(big, []byte("Everything must go."), bytes.Repeat([]byte("x"), 4096), 1)
	srv.deliver("INBOX", big)
	srv.deliver("INBOX", arfAbout(t, pl.send(t, "b@gmail.com", "newsletter", "spring"), "feedback@google.com"))
	in, store := newIntake(t, pl, srv, "google")
	in.Mailbox = resolved(t, in.Mailbox)
	in.MaxBytes = 4000
	if _, err := in.Drain(testenv.Context(t)); err != nil {
		t.Fatal(err)
	}
	// The one that cannot be stored is kept in Failed and does not hold
	// up the next one.
	if store.n.Load() != 1 || srv.count("Failed") != 1 || srv.count("Processed") != 1 || srv.count("INBOX") != 0 {
		t.Fatalf("stored %d, Failed %d, Processed %d, INBOX %d; want 1, 1, 1, 0",
			store.n.Load(), srv.count("Failed"), srv.count("Processed"), srv.count("INBOX"))
	}
}
