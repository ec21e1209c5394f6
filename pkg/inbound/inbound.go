// Package inbound is the SMTP receiver Mailwave runs on its bounce and
// feedback-loop addresses (RFC 5321). It is shared by inbound-dsn (VERP
// return paths, RFC 3464 bounces and RFC 3834 auto-replies) and fbl-parser
// (RFC 5965 reports sent by SMTP).
//
// The receiver is deliberately narrow:
//
//   - it takes mail only for recipients its Policy accepts; an address on a
//     domain that is not ours is refused as a relay attempt (554 5.7.1,
//     RFC 5321 §3.6.2: a server that is not a relay must refuse), one on
//     our domain that the policy does not know with 550 5.1.1;
//   - it never forwards what it receives;
//   - it limits the message size (SIZE, RFC 1870), the recipients per
//     transaction, the connections per client IP and the length of a whole
//     session, so that one client cannot hold it;
//   - it answers 250 to the end of DATA only after the raw message is
//     stored (the Store, normally the INBOUND JetStream stream); a store
//     failure is answered 451 4.3.0, so the sending MTA keeps the message
//     and tries again (RFC 5321 §4.5.4.1). Nothing accepted is lost, and
//     the message id is a digest of the envelope and bytes (MessageID),
//     so a store that succeeded too late to be answered 250 and the
//     client's retry are kept once.
//
// STARTTLS (RFC 3207) is offered when a TLS configuration is given.
//
// Use:
//
//	srv, err := inbound.New(inbound.Config{
//		Domain: "bounces.example.com",
//		Policy: myPolicy,               // which recipients, as what kind
//		Store:  inbound.JetStream(pub), // stored on mail.inbound.<kind>
//		Logger: log,
//	})
//	ln, _ := net.Listen("tcp", ":25")
//	go srv.Serve(ln)
//	defer srv.Shutdown(ctx)
package inbound

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/events"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// Errors a Policy returns to refuse a recipient, and errors of New.
var (
	// ErrRelayDenied: the recipient's domain is not one the server
	// receives for. Answered 554 5.7.1.
	ErrRelayDenied = errors.New("inbound: relay access denied")
	// ErrUnknownRecipient: the domain is ours but the address is not (for
	// example a VERP address whose signature does not check). Answered
	// 550 5.1.1.
	ErrUnknownRecipient = errors.New("inbound: unknown recipient")
	// ErrConfig: New was given an unusable configuration.
	ErrConfig = errors.New("inbound: invalid configuration")
)

// Policy decides which recipients the server takes mail for. It is the only
// thing that differs between the bounce and the feedback-loop receivers.
type Policy interface {
	// Recipient is called for every RCPT TO with the address as given
	// (without angle brackets). It returns the kind of mail the address
	// receives, or an error wrapping ErrRelayDenied or ErrUnknownRecipient
	// to refuse it permanently; any other error is answered 451 4.3.0 (try
	// again later).
	Recipient(rcpt string) (mailwavev1.InboundKind, error)
}

// PolicyFunc adapts a function to Policy.
type PolicyFunc func(rcpt string) (mailwavev1.InboundKind, error)

// Recipient calls f.
func (f PolicyFunc) Recipient(rcpt string) (mailwavev1.InboundKind, error) { return f(rcpt) }

// Classifier is an add-on interface for a Policy: when the policy also
// implements it, the server asks it, once the whole message is read and
// before it is stored, what the message is. inbound-dsn uses it to set
// auto-replies and replies to a return path (RFC 3834) apart from bounces,
// as INBOUND_KIND_REPLY.
type Classifier interface {
	Classify(kind mailwavev1.InboundKind, raw []byte) mailwavev1.InboundKind
}

// Store keeps a received message durably. The server answers 250 only
// after Store returned nil.
type Store interface {
	Store(ctx context.Context, m *mailwavev1.InboundMessage) error
}

// StoreFunc adapts a function to Store.
type StoreFunc func(ctx context.Context, m *mailwavev1.InboundMessage) error

// Store calls f.
func (f StoreFunc) Store(ctx context.Context, m *mailwavev1.InboundMessage) error { return f(ctx, m) }

// JetStream returns the Store that publishes a message on
// mailwavev1.SubjectInbound(kind) in the INBOUND stream and waits for
// JetStream's acknowledgement, with the message id as Nats-Msg-Id so a
// retried store is kept once.
func JetStream(pub *events.Publisher) Store {
	return StoreFunc(func(ctx context.Context, m *mailwavev1.InboundMessage) error {
		_, err := pub.Publish(ctx, mailwavev1.SubjectInbound(m.GetKind()), m, events.WithMsgID(m.GetId()))
		return err
	})
}

// Config configures a Server. Zero values take the defaults named.
type Config struct {
	// Domain is the host name in the greeting and EHLO answer.
	Domain string
	// Policy decides the recipients. Required.
	Policy Policy
	// Store keeps received messages. Required.
	Store Store
	// TLS, when set, enables STARTTLS.
	TLS *tls.Config
	// MaxMessageBytes bounds a message (default 10 MiB). It must fit the
	// store: NATS refuses a payload above the server's max_payload (1 MiB
	// by default), so keep it below that when storing in JetStream.
	MaxMessageBytes int64
	// MaxRecipients bounds the recipients of one transaction (default 50).
	MaxRecipients int
	// MaxConnsPerIP bounds the simultaneous connections from one client
	// IP (default 10); more are answered 421 4.7.0 and closed.
	MaxConnsPerIP int
	// MaxConns bounds all simultaneous connections (default 500).
	MaxConns int
	// SessionTimeout bounds a whole session, however active (default 10
	// minutes); past it the server answers 421 and closes.
	SessionTimeout time.Duration
	// CommandTimeout bounds the wait for each command and each read of
	// DATA (default 2 minutes; RFC 5321 §4.5.3.2 asks servers for 5
	// minutes, this receiver has no reason to be as patient).
	CommandTimeout time.Duration
	// StoreTimeout bounds one Store call (default 30 seconds).
	StoreTimeout time.Duration
	// Source is recorded in every InboundMessage (default "smtp").
	Source string
	// Logger receives one line per stored or refused message; nil
	// discards.
	Logger *slog.Logger
	// Now returns the time (default time.Now).
	Now func() time.Time
	// OnStored, when set, is called after every stored message (metrics).
	OnStored func(m *mailwavev1.InboundMessage)
	// OnRefused, when set, is called with the SMTP code of every refused
	// recipient, message or connection (metrics).
	OnRefused func(code int, why string)
}

// Server is an inbound SMTP server. Create it with New.
type Server struct {
	cfg  Config
	smtp *smtp.Server
	log  *slog.Logger

	mu    sync.Mutex
	perIP map[string]int
	total int
}

// New validates cfg and returns a Server. It returns an error wrapping
// ErrConfig when Policy or Store is missing or a limit is negative.
func New(cfg Config) (*Server, error) {
	if cfg.Policy == nil {
		return nil, fmt.Errorf("%w: no policy", ErrConfig)
	}
	if cfg.Store == nil {
		return nil, fmt.Errorf("%w: no store", ErrConfig)
	}
	if cfg.MaxMessageBytes < 0 || cfg.MaxRecipients < 0 || cfg.MaxConnsPerIP < 0 || cfg.MaxConns < 0 ||
		cfg.SessionTimeout < 0 || cfg.CommandTimeout < 0 || cfg.StoreTimeout < 0 {
		return nil, fmt.Errorf("%w: negative limit", ErrConfig)
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = 10 << 20
	}
	def(&cfg.MaxRecipients, 50)
	def(&cfg.MaxConnsPerIP, 10)
	def(&cfg.MaxConns, 500)
	defDur(&cfg.SessionTimeout, 10*time.Minute)
	defDur(&cfg.CommandTimeout, 2*time.Minute)
	defDur(&cfg.StoreTimeout, 30*time.Second)
	if cfg.Source == "" {
		cfg.Source = "smtp"
	}
	if cfg.Domain == "" {
		cfg.Domain = "localhost"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, perIP: map[string]int{}}
	ss := smtp.NewServer(backend{s})
	ss.Domain = cfg.Domain
	ss.TLSConfig = cfg.TLS
	ss.MaxMessageBytes = cfg.MaxMessageBytes
	ss.MaxRecipients = cfg.MaxRecipients
	ss.ReadTimeout = cfg.CommandTimeout
	ss.WriteTimeout = cfg.CommandTimeout
	ss.ErrorLog = slogPrinter{log}
	s.smtp = ss
	return s, nil
}

// Serve accepts connections on ln until Shutdown or Close; it returns
// smtp.ErrServerClosed then.
func (s *Server) Serve(ln net.Listener) error {
	return s.smtp.Serve(&limitListener{Listener: ln, s: s})
}

// Shutdown stops accepting connections and waits, until ctx ends, for the
// open sessions to finish.
func (s *Server) Shutdown(ctx context.Context) error { return s.smtp.Shutdown(ctx) }

// Close closes the listeners and every open connection at once.
func (s *Server) Close() error { return s.smtp.Close() }

// Run serves ln until ctx ends, then stops accepting and lets the sessions
// in progress finish (their message stored or refused) for at most drain,
// closing what is left. It returns once the drain is over: nil after a
// shutdown, or the error that stopped Serve.
func (s *Server) Run(ctx context.Context, ln net.Listener, drain time.Duration) error {
	drained := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(drained)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
		defer cancel()
		if err := s.Shutdown(sctx); err != nil {
			_ = s.Close()
		}
	})
	err := s.Serve(ln)
	if stop() {
		// Serve failed before any shutdown began.
		_ = s.Close()
		return err
	}
	<-drained
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// acquire counts a new connection from ip, or reports why it is refused.
func (s *Server) acquire(ip string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.total >= s.cfg.MaxConns:
		return "too many connections"
	case s.perIP[ip] >= s.cfg.MaxConnsPerIP:
		return "too many connections from your IP"
	}
	s.total++
	s.perIP[ip]++
	return ""
}

func (s *Server) release(ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
}

func (s *Server) refused(code int, why string) {
	if s.cfg.OnRefused != nil {
		s.cfg.OnRefused(code, why)
	}
}

// limitListener enforces the connection limits and the session deadline
// before go-smtp sees a connection.
type limitListener struct {
	net.Listener
	s *Server
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c.RemoteAddr())
		if why := l.s.acquire(ip); why != "" {
			l.s.refused(421, why)
			l.s.log.Info("inbound: connection refused", "remote_ip", ip, "why", why)
			// RFC 5321 §3.8: a server may answer 421 at connect and close.
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.WriteString(c, "421 4.7.0 "+l.s.cfg.Domain+" "+why+", try again later\r\n")
			_ = c.Close()
			continue
		}
		return newSessionConn(c, time.Now().Add(l.s.cfg.SessionTimeout), func() { l.s.release(ip) }), nil
	}
}

// sessionConn holds every read and write deadline go-smtp sets at or
// before the end of the session, so a session cannot outlive
// SessionTimeout however busy it keeps the server, and releases its
// connection slot once.
type sessionConn struct {
	net.Conn
	end     time.Time
	once    sync.Once
	release func()
}

func newSessionConn(c net.Conn, end time.Time, release func()) *sessionConn {
	sc := &sessionConn{Conn: c, end: end, release: release}
	_ = sc.SetDeadline(end)
	return sc
}

// writeGrace lets the server write its 421 goodbye once the session's
// reads have timed out.
const writeGrace = 5 * time.Second

func clamp(t, end time.Time) time.Time {
	if t.IsZero() || t.After(end) {
		return end
	}
	return t
}

func (c *sessionConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(clamp(t, c.end)); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(clamp(t, c.end.Add(writeGrace)))
}

func (c *sessionConn) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(clamp(t, c.end))
}

func (c *sessionConn) SetWriteDeadline(t time.Time) error {
	return c.Conn.SetWriteDeadline(clamp(t, c.end.Add(writeGrace)))
}

func (c *sessionConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

func remoteIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

type backend struct{ s *Server }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{s: b.s, conn: c}, nil
}

// session is one SMTP session; go-smtp calls its methods in order from one
// goroutine.
type session struct {
	s    *Server
	conn *smtp.Conn

	from string
	rcpt []string
	kind mailwavev1.InboundKind
}

func (x *session) Reset() {
	x.from, x.rcpt, x.kind = "", nil, mailwavev1.InboundKind_INBOUND_KIND_UNSPECIFIED
}

func (x *session) Logout() error { return nil }

func (x *session) Mail(from string, _ *smtp.MailOptions) error {
	x.Reset()
	x.from = from
	return nil
}

var (
	errRelay = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relay access denied"}
	errNoBox = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such recipient here"}
	errLater = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary failure, try again later"}
	// RFC 5321 §4.5.3.1.10: 452 asks the client to send the other
	// recipients in another transaction.
	errMixed  = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Send this recipient in another transaction"}
	errStored = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Could not store the message, try again later"}
	errRead   = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Error reading the message"}
)

func (x *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	kind, err := x.s.cfg.Policy.Recipient(to)
	switch {
	case errors.Is(err, ErrRelayDenied):
		x.s.refused(errRelay.Code, "relay")
		x.s.log.Info("inbound: relay refused", "rcpt", to, "remote_ip", remoteIP(x.conn.Conn().RemoteAddr()))
		return errRelay
	case errors.Is(err, ErrUnknownRecipient):
		x.s.refused(errNoBox.Code, "unknown recipient")
		x.s.log.Info("inbound: recipient refused", "rcpt", to, "err", err.Error())
		return errNoBox
	case err != nil:
		x.s.refused(errLater.Code, "policy")
		x.s.log.Warn("inbound: recipient check failed", "rcpt", to, "err", err.Error())
		return errLater
	}
	if len(x.rcpt) > 0 && kind != x.kind {
		return errMixed
	}
	x.kind = kind
	x.rcpt = append(x.rcpt, to)
	return nil
}

func (x *session) Data(r io.Reader) error {
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(r); err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			// The size limit (552 5.3.4) is go-smtp's own answer.
			x.s.refused(se.Code, "data")
			return se
		}
		x.s.refused(errRead.Code, "read")
		return errRead
	}
	raw := buf.Bytes()
	kind := x.kind
	if c, ok := x.s.cfg.Policy.(Classifier); ok {
		kind = c.Classify(kind, raw)
	}
	_, isTLS := x.conn.TLSConnectionState()
	m := &mailwavev1.InboundMessage{
		Id:         MessageID(x.from, x.rcpt, raw),
		Kind:       kind,
		MailFrom:   x.from,
		RcptTo:     append([]string(nil), x.rcpt...),
		RemoteIp:   remoteIP(x.conn.Conn().RemoteAddr()),
		Helo:       x.conn.Hostname(),
		Tls:        isTLS,
		ReceivedAt: timestamppb.New(x.s.cfg.Now()),
		Raw:        raw,
		Source:     x.s.cfg.Source,
	}
	ctx, cancel := context.WithTimeout(context.Background(), x.s.cfg.StoreTimeout)
	defer cancel()
	if err := x.s.cfg.Store.Store(ctx, m); err != nil {
		x.s.refused(errStored.Code, "store")
		x.s.log.Error("inbound: store failed", "id", m.Id, "kind", kind.String(), "err", err.Error())
		return errStored
	}
	x.s.log.Info("inbound: stored", "id", m.Id, "kind", kind.String(), "from", x.from,
		"rcpt", strings.Join(x.rcpt, ","), "remote_ip", m.RemoteIp, "bytes", len(raw))
	if x.s.cfg.OnStored != nil {
		x.s.cfg.OnStored(m)
	}
	return nil
}

// MessageID is the id a received message is stored under: a digest of its
// envelope and bytes. A client that sends the same message again — it
// never saw our 250, or it did and retries anyway — gets the same id, so
// JetStream's de-duplication (Nats-Msg-Id) keeps it once, and a bounce is
// never counted twice because its first delivery was answered late.
func MessageID(from string, rcpt []string, raw []byte) string {
	h := sha256.New()
	h.Write([]byte(strings.ToLower(from)))
	for _, r := range rcpt {
		h.Write([]byte{0})
		h.Write([]byte(strings.ToLower(r)))
	}
	h.Write([]byte{0, 0})
	h.Write(raw)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// slogPrinter routes go-smtp's internal error log to slog.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(format string, v ...any) {
	p.log.Warn("inbound: smtp", "detail", fmt.Sprintf(format, v...))
}

func (p slogPrinter) Println(v ...any) { p.log.Warn("inbound: smtp", "detail", fmt.Sprint(v...)) }
