package ispsim

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// ErrUnknownMailbox is returned when a complaint targets an IMAP user the
// profile does not declare.
var ErrUnknownMailbox = errors.New("ispsim: unknown imap user")

// imapBox is the feedback mailbox server (RFC 9051), in memory.
type imapBox struct {
	srv   *imapserver.Server
	users map[string]*imapmemserver.User
	addr  string
	done  chan struct{}
}

func startIMAP(addr string, cfg IMAPConfig, log *slog.Logger) (*imapBox, error) {
	mem := imapmemserver.New()
	b := &imapBox{users: map[string]*imapmemserver.User{}, done: make(chan struct{})}
	for _, u := range cfg.Users {
		mu := imapmemserver.NewUser(u.Username, u.Password)
		boxes := append([]string{"INBOX"}, u.Mailboxes...)
		for _, name := range boxes {
			if _, err := mu.Status(name, &imap.StatusOptions{}); err == nil {
				continue
			}
			if err := mu.Create(name, nil); err != nil {
				return nil, fmt.Errorf("ispsim: imap mailbox %s: %w", name, err)
			}
		}
		mem.AddUser(mu)
		b.users[u.Username] = mu
	}
	b.srv = imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps: imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}},
		// Loopback only, for tests and development: no TLS.
		InsecureAuth: true,
		Logger:       slogPrinter{log},
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ispsim: imap listen: %w", err)
	}
	b.addr = ln.Addr().String()
	go func() {
		defer close(b.done)
		if err := b.srv.Serve(ln); err != nil {
			log.Debug("imap serve", "err", err)
		}
	}()
	return b, nil
}

func (b *imapBox) close() error {
	err := b.srv.Close()
	<-b.done
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// deliver appends a message to user's mailbox.
func (b *imapBox) deliver(user, mailbox string, data []byte, t time.Time) error {
	u := b.users[user]
	if u == nil {
		return fmt.Errorf("%w: %s", ErrUnknownMailbox, user)
	}
	_, err := u.Append(mailbox, literal{bytes.NewReader(data)}, &imap.AppendOptions{Time: t})
	if err != nil {
		return fmt.Errorf("ispsim: imap append: %w", err)
	}
	return nil
}

type literal struct{ *bytes.Reader }

func (l literal) Size() int64 { return l.Reader.Size() }

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(format string, args ...any) {
	p.log.Debug("imap server", "msg", fmt.Sprintf(format, args...))
}
