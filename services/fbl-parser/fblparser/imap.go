package fblparser

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/arf"
	"github.com/mailwave/mailwave/pkg/inbound"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// ErrIntake wraps the errors of an IMAP session.
var ErrIntake = errors.New("fblparser: imap intake")

// defaultMaxBytes is the largest report stored by default: the NATS
// max_payload (1 MiB) less room for the envelope.
const defaultMaxBytes = 983040

// IntakeState is what the intake remembers of a mailbox between sessions
// and restarts: every message with a UID up to LastUID, under UIDValidity,
// is stored in INBOUND (RFC 9051 §2.3.1.1: a UID is valid only together
// with the mailbox's UIDVALIDITY).
type IntakeState struct {
	UIDValidity uint32 `json:"uid_validity"`
	LastUID     uint32 `json:"last_uid"`
}

// StateStore keeps IntakeState durably.
type StateStore interface {
	Load(ctx context.Context, mailbox string) (IntakeState, error)
	Save(ctx context.Context, mailbox string, st IntakeState) error
}

// KVState is the StateStore in a JetStream key-value bucket, one key per
// mailbox name.
type KVState struct{ KV jetstream.KeyValue }

// Load returns the saved state, or the zero state when none was saved.
func (s KVState) Load(ctx context.Context, mailbox string) (IntakeState, error) {
	e, err := s.KV.Get(ctx, mailwavev1.KeyToken(mailbox))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return IntakeState{}, nil
	}
	if err != nil {
		return IntakeState{}, fmt.Errorf("%w: load state: %v", ErrIntake, err)
	}
	var st IntakeState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return IntakeState{}, fmt.Errorf("%w: state of %s: %v", ErrIntake, mailbox, err)
	}
	return st, nil
}

// Save stores st.
func (s KVState) Save(ctx context.Context, mailbox string, st IntakeState) error {
	b, _ := json.Marshal(st)
	if _, err := s.KV.Put(ctx, mailwavev1.KeyToken(mailbox), b); err != nil {
		return fmt.Errorf("%w: save state: %v", ErrIntake, err)
	}
	return nil
}

// Intake reads one feedback mailbox. Every report is stored in INBOUND
// before anything else happens to it; only then is it moved out of the
// folder, to Processed, or to Failed when it is not a feedback report.
// Nothing is ever deleted unread, and the order store → remember UID →
// move makes a crash at any point lose nothing: a message stored but not
// yet remembered is stored again under the same id (JetStream drops the
// copy by Nats-Msg-Id, and the processor by report fingerprint); one
// remembered but not yet moved is moved by the next session.
type Intake struct {
	Mailbox Mailbox
	// Store keeps each report (normally inbound.JetStream).
	Store inbound.Store
	// State remembers UIDVALIDITY and the last stored UID.
	State StateStore
	// Lease, when set, makes only one replica at a time read the mailbox.
	Lease *Lease
	// Logger receives the intake's log lines; nil discards.
	Logger *slog.Logger
	// PollInterval is how often the folder is looked at when the server
	// does not offer IDLE (or the mailbox is PollOnly), and how often IDLE
	// is renewed (RFC 2177 asks clients to re-issue it within 29 minutes).
	// Default 5 minutes.
	PollInterval time.Duration
	// MaxBytes bounds a report the intake stores (default 983040, within
	// the NATS max_payload). A larger message cannot be stored: it is
	// moved to the Failed folder, unread by the platform, and logged.
	MaxBytes int64
	// MinBackoff and MaxBackoff bound the wait before reconnecting after a
	// failed session (defaults 1s and 2m); it doubles per failure.
	MinBackoff, MaxBackoff time.Duration
	// Now returns the time (default time.Now).
	Now func() time.Time
	// BeforeMove, when set, is called for every report after it was
	// stored and remembered and before it is moved; an error abandons the
	// session there, as a crash would. Tests use it to stop the intake
	// between store and move.
	BeforeMove func(uid imap.UID) error
	// OnStored and OnFailed, when set, are called per stored report and
	// per session error (metrics).
	OnStored func(m *mailwavev1.InboundMessage)
	OnFailed func(err error)
}

func (in *Intake) log() *slog.Logger {
	if in.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return in.Logger.With("mailbox", in.Mailbox.Name)
}

func (in *Intake) now() time.Time {
	if in.Now == nil {
		return time.Now()
	}
	return in.Now()
}

// Run reads the mailbox until ctx ends: one session after another,
// waiting with IDLE (or polling) between drains, reconnecting with
// exponential backoff after a failure. With a Lease, it reads only while
// it holds the lease. It returns nil when ctx ends.
func (in *Intake) Run(ctx context.Context) error {
	minB, maxB := in.MinBackoff, in.MaxBackoff
	if minB <= 0 {
		minB = time.Second
	}
	if maxB < minB {
		maxB = max(2*time.Minute, minB)
	}
	if in.Lease != nil {
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = in.Lease.Release(rctx)
		}()
	}
	backoff := minB
	for ctx.Err() == nil {
		wait := backoff
		err := in.leased(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errNotLeased):
			// Another replica reads the mailbox: look again when its
			// lease could have run out.
			wait = in.Lease.ttl() / 3
		case err == nil:
			backoff = minB
			continue
		default:
			if in.OnFailed != nil {
				in.OnFailed(err)
			}
			in.log().Warn("fbl: imap session failed", "err", err.Error(), "retry_in", backoff.String())
			backoff = min(2*backoff, maxB)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
	return nil
}

// errNotLeased: another replica holds the mailbox's lease.
var errNotLeased = errors.New("fblparser: mailbox leased by another replica")

// leased runs one session while holding the lease, renewing it; losing
// the lease ends the session.
func (in *Intake) leased(ctx context.Context) error {
	if in.Lease == nil {
		return in.session(ctx, true)
	}
	ok, err := in.Lease.Acquire(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return errNotLeased
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		t := time.NewTicker(in.Lease.ttl() / 3)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
			if ok, err := in.Lease.Acquire(sctx); err != nil || !ok {
				// Unsure whether the lease is still ours: stop rather
				// than read beside another replica.
				cancel(errNotLeased)
				return
			}
		}
	}()
	err = in.session(sctx, true)
	cancel(nil)
	<-renewed
	if ctx.Err() == nil && errors.Is(context.Cause(sctx), errNotLeased) {
		in.log().Warn("fbl: mailbox lease lost, session ended")
		return errNotLeased
	}
	return err
}

// Drain connects once, stores and moves every report waiting in the
// folder and logs out. It returns how many reports it stored.
func (in *Intake) Drain(ctx context.Context) (int, error) {
	var n int
	err := in.withClient(ctx, nil, func(c *imapclient.Client) error {
		var err error
		n, err = in.drain(ctx, c)
		return err
	})
	return n, err
}

// session runs one connection: drain, then wait for news and drain again,
// until an error or ctx ends.
func (in *Intake) session(ctx context.Context, loop bool) error {
	news := make(chan struct{}, 1)
	return in.withClient(ctx, news, func(c *imapclient.Client) error {
		for {
			if _, err := in.drain(ctx, c); err != nil {
				return err
			}
			if !loop {
				return nil
			}
			if err := in.wait(ctx, c, news); err != nil {
				return err
			}
			if ctx.Err() != nil {
				return nil
			}
		}
	})
}

func (in *Intake) withClient(ctx context.Context, news chan struct{}, f func(*imapclient.Client) error) error {
	m := in.Mailbox
	opts := &imapclient.Options{
		TLSConfig: &tls.Config{ServerName: m.Host, InsecureSkipVerify: m.InsecureSkipVerify, MinVersion: tls.VersionTLS12},
		Dialer:    &net.Dialer{Timeout: 30 * time.Second},
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil && news != nil {
					select {
					case news <- struct{}{}:
					default:
					}
				}
			},
		},
	}
	var (
		c   *imapclient.Client
		err error
	)
	switch m.TLS {
	case TLSNone:
		c, err = imapclient.DialInsecure(m.Addr(), opts)
	case TLSStartTLS:
		c, err = imapclient.DialStartTLS(m.Addr(), opts)
	default:
		c, err = imapclient.DialTLS(m.Addr(), opts)
	}
	if err != nil {
		return fmt.Errorf("%w: dial %s: %v", ErrIntake, m.Addr(), err)
	}
	// Commands do not take a context: closing the connection when ctx
	// ends makes every pending command return.
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer func() {
		stop()
		_ = c.Close()
	}()
	if err := c.Login(m.Username, m.Password).Wait(); err != nil {
		return fmt.Errorf("%w: login: %v", ErrIntake, err)
	}
	if err := in.ensureFolders(c); err != nil {
		return err
	}
	err = f(c)
	if err == nil && ctx.Err() == nil {
		_ = c.Logout().Wait()
	}
	return err
}

// ensureFolders creates Processed and Failed when they do not exist.
func (in *Intake) ensureFolders(c *imapclient.Client) error {
	list, err := c.List("", "*", nil).Collect()
	if err != nil {
		return fmt.Errorf("%w: list: %v", ErrIntake, err)
	}
	have := map[string]bool{}
	for _, l := range list {
		have[l.Mailbox] = true
	}
	for _, name := range []string{in.Mailbox.Processed, in.Mailbox.Failed} {
		if have[name] {
			continue
		}
		if err := c.Create(name, nil).Wait(); err != nil {
			return fmt.Errorf("%w: create %s: %v", ErrIntake, name, err)
		}
	}
	return nil
}

// drain stores every report of the folder not stored yet and moves every
// stored one out, in UID order.
func (in *Intake) drain(ctx context.Context, c *imapclient.Client) (int, error) {
	m := in.Mailbox
	sel, err := c.Select(m.Folder, nil).Wait()
	if err != nil {
		return 0, fmt.Errorf("%w: select %s: %v", ErrIntake, m.Folder, err)
	}
	st, err := in.State.Load(ctx, m.Name)
	if err != nil {
		return 0, err
	}
	if st.UIDValidity != sel.UIDValidity {
		// A new UIDVALIDITY invalidates every remembered UID (RFC 9051
		// §2.3.1.1): what is still in the folder has not been moved, so
		// it is stored again; the de-duplication by fingerprint keeps
		// already processed reports from counting twice.
		if st.UIDValidity != 0 {
			in.log().Warn("fbl: uidvalidity changed", "old", st.UIDValidity, "new", sel.UIDValidity)
		}
		st = IntakeState{UIDValidity: sel.UIDValidity}
	}
	if sel.NumMessages == 0 {
		return 0, nil
	}
	found, err := c.UIDSearch(&imap.SearchCriteria{}, nil).Wait()
	if err != nil {
		return 0, fmt.Errorf("%w: search: %v", ErrIntake, err)
	}
	uids := found.AllUIDs()
	slices.Sort(uids)
	limit := in.MaxBytes
	if limit <= 0 {
		limit = defaultMaxBytes
	}
	stored := 0
	for _, uid := range uids {
		if ctx.Err() != nil {
			return stored, ctx.Err()
		}
		raw, err := fetchRaw(c, uid)
		if err != nil {
			return stored, err
		}
		if raw == nil {
			continue // expunged by someone else meanwhile
		}
		tooBig := int64(len(raw)) > limit
		if tooBig && uint32(uid) > st.LastUID {
			// Storing it can never succeed; it stays in the mailbox, in
			// Failed, for a person to look at.
			in.log().Warn("fbl: report too large to store, moved to the failed folder", "uid", uint32(uid), "bytes", len(raw))
			st.LastUID = uint32(uid)
			if err := in.State.Save(ctx, m.Name, st); err != nil {
				return stored, err
			}
		}
		if uint32(uid) > st.LastUID {
			msg := &mailwavev1.InboundMessage{
				Id:         imapMessageID(m.Name, sel.UIDValidity, uid),
				Kind:       mailwavev1.InboundKind_INBOUND_KIND_FBL,
				RcptTo:     []string{m.Username},
				ReceivedAt: timestamppb.New(in.now()),
				Raw:        raw,
				Source:     "imap:" + m.Name,
			}
			if err := in.Store.Store(ctx, msg); err != nil {
				return stored, fmt.Errorf("%w: store uid %d: %v", ErrIntake, uid, err)
			}
			stored++
			if in.OnStored != nil {
				in.OnStored(msg)
			}
			st.LastUID = uint32(uid)
			if err := in.State.Save(ctx, m.Name, st); err != nil {
				return stored, err
			}
			in.log().Info("fbl: report stored", "uid", uint32(uid), "id", msg.Id, "bytes", len(raw))
		}
		if in.BeforeMove != nil {
			if err := in.BeforeMove(uid); err != nil {
				return stored, fmt.Errorf("%w: before move uid %d: %v", ErrIntake, uid, err)
			}
		}
		to := m.Processed
		if tooBig || !arf.IsReport(raw) {
			to = m.Failed
		}
		if _, err := c.Move(imap.UIDSetNum(uid), to).Wait(); err != nil {
			return stored, fmt.Errorf("%w: move uid %d to %s: %v", ErrIntake, uid, to, err)
		}
	}
	return stored, nil
}

// fetchRaw reads the whole message without setting \Seen; nil when the
// message is gone.
func fetchRaw(c *imapclient.Client, uid imap.UID) ([]byte, error) {
	section := &imap.FetchItemBodySection{Peek: true}
	bufs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{section}}).Collect()
	if err != nil {
		return nil, fmt.Errorf("%w: fetch uid %d: %v", ErrIntake, uid, err)
	}
	for _, b := range bufs {
		if b.UID == uid {
			if raw := b.FindBodySection(section); raw != nil {
				return raw, nil
			}
		}
	}
	return nil, nil
}

// wait returns when the folder may hold news: the server reported new
// messages during IDLE (RFC 2177), the poll interval passed, or ctx ended.
func (in *Intake) wait(ctx context.Context, c *imapclient.Client, news chan struct{}) error {
	poll := in.PollInterval
	if poll <= 0 {
		poll = 5 * time.Minute
	}
	t := time.NewTimer(poll)
	defer t.Stop()
	if in.Mailbox.PollOnly || !c.Caps().Has(imap.CapIdle) {
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		return nil
	}
	idle, err := c.Idle()
	if err != nil {
		return fmt.Errorf("%w: idle: %v", ErrIntake, err)
	}
	select {
	case <-ctx.Done():
		return nil
	case <-t.C:
	case <-news:
	case <-c.Closed():
	}
	if err := idle.Close(); err != nil {
		return fmt.Errorf("%w: idle: %v", ErrIntake, err)
	}
	if err := idle.Wait(); err != nil {
		return fmt.Errorf("%w: idle: %v", ErrIntake, err)
	}
	return nil
}

// imapMessageID names a mailbox message stably, so a message stored twice
// (a crash between store and remembering its UID) has the same
// Nats-Msg-Id and JetStream keeps one copy.
func imapMessageID(mailbox string, validity uint32, uid imap.UID) string {
	sum := sha256.Sum256([]byte("imap\x00" + mailbox + "\x00" + strconv.FormatUint(uint64(validity), 10) + "\x00" + strconv.FormatUint(uint64(uid), 10)))
	return hex.EncodeToString(sum[:16])
}
