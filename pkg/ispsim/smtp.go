package ispsim

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/mail"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// gate sits between the provider's TCP listener and go-smtp: it plays the
// pre-greeting behaviours (outages, connection caps, slow greetings) and
// hands the admitted connections to go-smtp's Serve.
type gate struct {
	inner  net.Listener
	p      *Provider
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newGate(l net.Listener, p *Provider) *gate {
	return &gate{inner: l, p: p, ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (g *gate) Accept() (net.Conn, error) {
	select {
	case c := <-g.ch:
		return c, nil
	case <-g.closed:
		return nil, net.ErrClosed
	}
}

func (g *gate) Close() error {
	g.once.Do(func() { close(g.closed) })
	return g.inner.Close()
}

func (g *gate) Addr() net.Addr { return g.inner.Addr() }

// run accepts raw connections until the listener closes.
func (g *gate) run() {
	for {
		c, err := g.inner.Accept()
		if err != nil {
			return
		}
		g.p.sim.wg.Add(1)
		go func() {
			defer g.p.sim.wg.Done()
			g.admit(c)
		}()
	}
}

func sourceIP(a net.Addr) netip.Addr {
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func (g *gate) admit(raw net.Conn) {
	p, s := g.p, g.p.sim
	ip := sourceIP(raw.RemoteAddr())
	s.ledger.connOpened(p.name, ip)
	c := &conn{Conn: raw}
	c.onClose = func() {
		p.release(ip)
		s.ledger.connClosed(p.name, ip)
	}
	mode, v, slow := p.admit(ip)
	if slow > 0 && !s.sleep(slow) {
		c.Close()
		return
	}
	switch {
	case mode == OutageReset:
		s.ledger.addRejection(&Rejection{Provider: p.name, SourceIP: ip, Stage: "connect", Reason: "outage", Text: "connection reset", At: s.clock.Now()})
		c.Close()
		return
	case mode == OutageSilent:
		// Never greet: hold the connection until the client gives up or
		// the simulator stops.
		go func() {
			select {
			case <-s.done:
				c.Close()
			case <-c.closedCh():
			}
		}()
		_, _ = io.Copy(io.Discard, c)
		c.Close()
		return
	case v != nil:
		s.reject(p, ip, "connect", "", "", v)
		_, _ = io.WriteString(c, v.reply.Wire())
		c.Close()
		return
	}
	select {
	case g.ch <- c:
	case <-g.closed:
		c.Close()
	}
}

// conn is an accepted connection: it releases the provider's connection
// slot once, and can close itself after the reply that ends a session
// (421, RFC 5321 §3.8) has been written.
type conn struct {
	net.Conn
	onClose    func()
	closeOnce  sync.Once
	done       chan struct{}
	doneOnce   sync.Once
	closeAfter atomic.Int32 // writes left before closing; 0: never
}

func (c *conn) closedCh() <-chan struct{} {
	c.doneOnce.Do(func() { c.done = make(chan struct{}) })
	return c.done
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.closedCh()
		close(c.done)
		c.onClose()
	})
	return err
}

func (c *conn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if left := c.closeAfter.Load(); left > 0 {
		if c.closeAfter.Add(-1) == 0 {
			c.Close()
		}
	}
	return n, err
}

// backend makes a session per connection for one provider.
type backend struct{ p *Provider }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	raw := c.Conn()
	var cc *conn
	if tc, ok := raw.(interface{ NetConn() net.Conn }); ok {
		cc, _ = tc.NetConn().(*conn)
	} else {
		cc, _ = raw.(*conn)
	}
	return &session{p: b.p, c: c, cc: cc, ip: sourceIP(raw.RemoteAddr()), local: raw.LocalAddr().String()}, nil
}

type session struct {
	p     *Provider
	c     *smtp.Conn
	cc    *conn
	ip    netip.Addr
	local string

	from  string
	envid string
	rcpts []rcptFate
	count int // transactions accepted in this session
}

func (s *session) Reset() {
	s.from, s.envid, s.rcpts = "", "", nil
}

func (s *session) Logout() error { return nil }

// refuse records v and returns it as go-smtp's error; a 421 closes the
// connection once written.
func (s *session) refuse(stage, rcpt string, v *verdict) error {
	s.p.sim.reject(s.p, s.ip, stage, s.from, rcpt, v)
	if v.reply.Code == 421 && s.cc != nil {
		s.cc.closeAfter.Store(int32(len(v.reply.Lines)))
	}
	return v.reply.smtpError()
}

func (s *session) delay() {
	if d := s.p.commandDelay(); d > 0 {
		s.p.sim.sleep(d)
	}
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.delay()
	if v := s.p.checkMail(s.ip, from, s.count); v != nil {
		return s.refuse("mail", "", v)
	}
	s.from = from
	if opts != nil {
		s.envid = opts.EnvelopeID
	}
	return nil
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.delay()
	fate, v := s.p.checkRcpt(s.ip, s.from, to)
	if v != nil {
		return s.refuse("rcpt", to, v)
	}
	if opts != nil {
		fate.notify = opts.Notify
		fate.orcpt = opts.OriginalRecipient
	}
	s.rcpts = append(s.rcpts, fate)
	return nil
}

func (s *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err // go-smtp answers 552 for a message over the size limit
	}
	s.delay()
	sim := s.p.sim
	var header mail.Header
	if m, err := mail.ReadMessage(bytes.NewReader(data)); err == nil {
		header = m.Header
	} else {
		header = mail.Header{}
	}
	msg := &Message{
		Provider:   s.p.name,
		SourceIP:   s.ip,
		LocalAddr:  s.local,
		EHLO:       s.c.Hostname(),
		MailFrom:   s.from,
		EnvelopeID: s.envid,
		MessageID:  normalizeMsgID(header.Get("Message-Id")),
		Header:     header,
		Data:       data,
		Size:       len(data),
		ReceivedAt: sim.clock.Now(),
		Fates:      map[string]string{},
	}
	_, msg.TLS = s.c.TLSConnectionState()
	for _, f := range s.rcpts {
		msg.Rcpts = append(msg.Rcpts, f.addr)
	}
	ctx, cancel := context.WithTimeout(sim.ctx, 10*time.Second)
	msg.Auth = sim.checker.check(ctx, s.ip, msg.EHLO, s.from, data, header.Get("From"))
	cancel()
	complain := s.p.accepted(s.ip, msg.MessageID, s.rcpts)
	for i, f := range s.rcpts {
		switch {
		case f.dsn != nil:
			msg.Fates[f.addr] = "dsn"
		case complain[i]:
			msg.Fates[f.addr] = "complaint"
		default:
			msg.Fates[f.addr] = "delivered"
		}
	}
	sim.ledger.addMessage(msg)
	for i, f := range s.rcpts {
		switch {
		case f.dsn != nil:
			sim.scheduleDSN(s.p, msg, f)
		case complain[i]:
			sim.scheduleComplaint(s.p, msg, f.addr, s.p.complaintConfig().Delay)
		}
	}
	s.count++
	return nil
}

// reject records a refusal in the ledger.
func (s *Sim) reject(p *Provider, ip netip.Addr, stage, from, rcpt string, v *verdict) {
	s.ledger.addRejection(&Rejection{
		Provider: p.name, SourceIP: ip, Stage: stage, Reason: v.reason,
		MailFrom: from, Rcpt: rcpt, Code: v.reply.Code, Enhanced: v.reply.Enhanced,
		Text: v.reply.Text(), At: s.clock.Now(),
	})
}

// sleep waits d in real time; it reports false if the simulator stopped.
func (s *Sim) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}

// smtpLogger sends go-smtp's error log to slog at debug level: clients
// that hang up are routine in a simulator.
type smtpLogger struct{ s *Sim }

func (l smtpLogger) Printf(format string, v ...any) {
	l.s.log.Debug("smtp server", "msg", strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (l smtpLogger) Println(v ...any) {
	l.s.log.Debug("smtp server", "msg", strings.TrimSpace(fmt.Sprint(v...)))
}
