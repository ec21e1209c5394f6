package smtpclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"maps"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Client is one SMTP session made by Dialer.Dial. It sends any number of
// messages one after the other; it is not safe for concurrent use. A
// Client whose connection failed returns ErrClosed from every method.
type Client struct {
	raw       net.Conn // the TCP (or SOCKS) connection, closed on ctx done
	conn      net.Conn // raw, or the TLS connection over it
	cw        *connWriter
	r         *bufio.Reader
	w         *bufio.Writer
	rep       reply
	t         Timeouts
	addr      string
	local     net.Addr
	helloName string

	exts       map[string]string
	pipelining bool
	eightBit   bool
	smtputf8   bool
	hasSize    bool
	sizeLimit  int64

	tlsUsed     bool
	tlsVerified bool
	tlsVersion  uint16
	tlsFailed   error

	sent      int
	needReset bool // a transaction was opened and not completed
	closed    atomic.Bool
	num       []byte // scratch for SIZE=
	abort     func() // c.Close as a func value made once, for AfterFunc
}

// connWriter refreshes the write deadline before each write, so that a
// timeout bounds each block of data rather than the whole message (RFC
// 5321 §4.5.3.2.5).
type connWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (w *connWriter) Write(p []byte) (int, error) {
	w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.conn.Write(p)
}

// Body tells how the message content is declared in MAIL (RFC 6152).
type Body int

const (
	// BodyAuto declares BODY=8BITMIME when the content has a byte above
	// 127 and the server offers 8BITMIME.
	BodyAuto Body = iota
	// Body7Bit declares nothing.
	Body7Bit
	// Body8BitMIME declares BODY=8BITMIME when the server offers it.
	Body8BitMIME
)

// SendOptions are the per-message choices of Send. The zero value fits
// most messages.
type SendOptions struct {
	// Body declares the content's encoding. When the content is 8-bit and
	// the server does not offer 8BITMIME it is sent as is, as most MTAs
	// do, rather than bounced.
	Body Body
	// SMTPUTF8 asks for SMTPUTF8 (RFC 6531) because the header has UTF-8
	// addresses. It is asked for anyway when an envelope address is not
	// ASCII. When the server does not offer it Send fails with
	// ErrSMTPUTF8Unsupported.
	SMTPUTF8 bool
}

// RcptResult is the server's answer to one RCPT.
type RcptResult struct {
	// Addr is the recipient as given to Send.
	Addr string
	// Err is nil when the recipient was accepted, else an *Error with
	// Phase rcpt.
	Err error
}

// Result describes a message the server accepted.
type Result struct {
	// Code, EnhancedCode and Reply are the final reply to the content;
	// Reply usually names the server's queue id ("Ok: queued as 4Xyz").
	Code         int
	EnhancedCode string
	Reply        string
	// Rcpts holds one entry per recipient given to Send, in order.
	Rcpts []RcptResult
	// RemoteAddr is the address dialled ("host:port"); LocalAddr is the
	// local end of the TCP connection (the proxy connection with SOCKS5).
	RemoteAddr string
	LocalAddr  net.Addr
	// TLS tells whether the session was encrypted, TLSVersion its
	// version (tls.VersionTLS13…) and TLSVerified whether the certificate
	// verified for the MX name.
	TLS         bool
	TLSVersion  uint16
	TLSVerified bool
	// Pipelined tells whether MAIL, RCPT and DATA went in one write.
	Pipelined bool
	// Start is when Send began and Duration how long it took.
	Start    time.Time
	Duration time.Duration
}

// Send delivers one message to rcpts in one transaction on this session:
// MAIL, RCPT per recipient and DATA, pipelined in one write when the
// server offers PIPELINING (RFC 2920), then the content dot-stuffed (RFC
// 5321 §4.5.2) and the final ".". A transaction left open by a failed
// Send is reset with RSET first. from "" sends the null reverse path.
// data is the whole message with CRLF line endings (a bare LF is sent as
// CRLF); it is not modified or retained.
//
// When at least one recipient is accepted and the content is accepted,
// Send returns a Result whose Rcpts tell which recipients were refused,
// and a nil error. Otherwise it returns an *Error: Phase mail, rcpt (the
// first refusal, when every recipient was refused; the Result then holds
// every refusal, and is the only non-nil Result returned with an error),
// data or dot for a refusal or a failure at that step.
// ErrMessageTooLarge, ErrSMTPUTF8Unsupported, ErrInvalidAddress and
// ErrNoRecipients are found before anything is sent. ErrClosed is
// returned on a Client that can no longer be used. When ctx is done the
// connection is closed and the error wraps ctx's error.
func (c *Client) Send(ctx context.Context, from string, rcpts []string, data []byte, opts SendOptions) (res *Result, err error) {
	start := time.Now()
	if err := c.usable(ctx, PhaseMail); err != nil {
		return nil, err
	}
	if len(rcpts) == 0 {
		return nil, &Error{Phase: PhaseRcpt, Err: ErrNoRecipients}
	}
	if !validPath(from) {
		return nil, &Error{Phase: PhaseMail, Err: ErrInvalidAddress}
	}
	utf8 := opts.SMTPUTF8 || !isASCII(from)
	for _, r := range rcpts {
		if r == "" || !validPath(r) {
			return nil, &Error{Phase: PhaseRcpt, Err: ErrInvalidAddress}
		}
		utf8 = utf8 || !isASCII(r)
	}
	if utf8 && !c.smtputf8 {
		return nil, &Error{Phase: PhaseMail, Err: ErrSMTPUTF8Unsupported}
	}
	if c.hasSize && c.sizeLimit > 0 && int64(len(data)) > c.sizeLimit {
		return nil, &Error{Phase: PhaseMail, Err: ErrMessageTooLarge}
	}
	eight := false
	switch opts.Body {
	case BodyAuto:
		eight = c.eightBit && !isASCIIBytes(data)
	case Body8BitMIME:
		eight = c.eightBit
	}

	stop := c.watch(ctx)
	defer func() {
		if !c.unwatch(stop) && err != nil {
			err = c.ctxError(ctx, err)
		}
	}()

	res = &Result{
		Rcpts:      make([]RcptResult, len(rcpts)),
		RemoteAddr: c.addr,
		LocalAddr:  c.local,
		TLS:        c.tlsUsed, TLSVersion: c.tlsVersion, TLSVerified: c.tlsVerified,
		Pipelined: c.pipelining,
		Start:     start,
	}
	if err := c.transaction(from, rcpts, data, utf8, eight, res); err != nil {
		if e, ok := err.(*Error); ok && e.Phase == PhaseRcpt && e.Code > 0 {
			res.Duration = time.Since(start)
			return res, err
		}
		return nil, err
	}
	res.Duration = time.Since(start)
	return res, nil
}

// transaction runs MAIL, RCPT, DATA and the content. Without pipelining
// each command waits for its reply; with it they are written together and
// the replies read in order (RFC 2920 §3.1).
func (c *Client) transaction(from string, rcpts []string, data []byte, utf8, eight bool, res *Result) error {
	pipe := c.pipelining
	reset := c.needReset
	c.cw.timeout = c.t.Mail
	if reset {
		c.w.WriteString("RSET\r\n")
		if !pipe {
			if err := c.expect2xx(PhaseMail, c.t.Command); err != nil {
				return err
			}
			c.needReset = false
		}
	}
	c.writeMail(from, int64(len(data)), utf8, eight)
	if !pipe {
		if err := c.expect2xx(PhaseMail, c.t.Mail); err != nil {
			return err
		}
	}
	c.needReset = true
	accepted := 0
	var firstRcptErr error
	for i, r := range rcpts {
		c.w.WriteString("RCPT TO:<")
		c.w.WriteString(r)
		c.w.WriteString(">\r\n")
		res.Rcpts[i].Addr = r
		if !pipe {
			if err := c.roundTrip(PhaseRcpt, c.t.Rcpt); err != nil {
				return err
			}
			if !c.recordRcpt(res, i, &accepted, &firstRcptErr) {
				return c.replyError(PhaseRcpt)
			}
		}
	}
	if !pipe && accepted == 0 {
		return firstRcptErr
	}
	c.w.WriteString("DATA\r\n")
	if err := c.flush(PhaseData); err != nil {
		return err
	}

	var mailErr error
	if pipe {
		if reset {
			if err := c.readReply(PhaseMail, c.t.Command); err != nil {
				return err
			}
			if c.rep.code == 421 {
				return c.replyError(PhaseMail)
			}
			if c.rep.class() != 2 {
				mailErr = c.replyError(PhaseMail)
			}
		}
		if err := c.readReply(PhaseMail, c.t.Mail); err != nil {
			return err
		}
		if c.rep.code == 421 {
			return c.replyError(PhaseMail)
		}
		if c.rep.class() != 2 && mailErr == nil {
			mailErr = c.replyError(PhaseMail)
		}
		for i := range rcpts {
			if err := c.readReply(PhaseRcpt, c.t.Rcpt); err != nil {
				return err
			}
			if !c.recordRcpt(res, i, &accepted, &firstRcptErr) {
				return c.replyError(PhaseRcpt)
			}
		}
		if mailErr != nil {
			// Recipients were refused because MAIL was; their results
			// would mislead.
			clear(res.Rcpts)
		}
	}
	if err := c.readReply(PhaseData, c.t.DataInit); err != nil {
		return err
	}
	if mailErr == nil && accepted == 0 {
		mailErr = firstRcptErr
	}
	if mailErr != nil {
		if c.rep.code == 354 {
			// RFC 2920 §3.1: a server that accepted DATA without a valid
			// recipient gets an empty message, which it must refuse.
			// Nothing can be delivered, so a failure here is PhaseData,
			// not PhaseDot (see MaybeDelivered).
			c.cw.timeout = c.t.DataBlock
			c.w.WriteString(".\r\n")
			if err := c.flush(PhaseData); err != nil {
				return err
			}
			if err := c.readReply(PhaseData, c.t.DataTerm); err != nil {
				return err
			}
			c.needReset = false
		}
		return mailErr
	}
	if c.rep.code != 354 {
		return c.replyError(PhaseData)
	}

	c.cw.timeout = c.t.DataBlock
	writeDotStuffed(c.w, data)
	if err := c.flush(PhaseDot); err != nil {
		return err
	}
	if err := c.readReply(PhaseDot, c.t.DataTerm); err != nil {
		return err
	}
	// The transaction is over, accepted or not (RFC 5321 §4.1.1.4).
	c.needReset = false
	if c.rep.class() != 2 {
		return c.replyError(PhaseDot)
	}
	c.sent++
	res.Code = c.rep.code
	res.EnhancedCode = c.rep.enhanced()
	res.Reply = c.rep.message()
	return nil
}

// recordRcpt stores the reply to RCPT i. It returns false when the reply
// ends the session (421), which the caller turns into the error.
func (c *Client) recordRcpt(res *Result, i int, accepted *int, first *error) bool {
	if c.rep.class() == 2 {
		*accepted++
		return true
	}
	if c.rep.code == 421 {
		return false
	}
	e := c.replyError(PhaseRcpt)
	res.Rcpts[i].Err = e
	if *first == nil {
		*first = e
	}
	return true
}

// writeMail writes MAIL FROM with the parameters the server understands:
// SIZE (RFC 1870), BODY=8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531).
func (c *Client) writeMail(from string, size int64, utf8, eight bool) {
	c.w.WriteString("MAIL FROM:<")
	c.w.WriteString(from)
	c.w.WriteByte('>')
	if c.hasSize {
		c.w.WriteString(" SIZE=")
		c.num = strconv.AppendInt(c.num[:0], size, 10)
		c.w.Write(c.num)
	}
	if eight {
		c.w.WriteString(" BODY=8BITMIME")
	}
	if utf8 {
		c.w.WriteString(" SMTPUTF8")
	}
	c.w.WriteString("\r\n")
}

// writeDotStuffed writes the content, doubling a "." that starts a line
// (RFC 5321 §4.5.2), then the terminating ".". A bare LF is written as
// CRLF: RFC 5322 §2.3 forbids it, and a receiver that ends lines on LF
// could otherwise see an end of data inside the content ("SMTP
// smuggling"). The content is written straight from data through the
// buffered writer, segment by segment, without an intermediate copy.
func writeDotStuffed(w *bufio.Writer, data []byte) {
	if len(data) == 0 {
		w.WriteString(".\r\n")
		return
	}
	if data[0] == '.' {
		w.WriteByte('.')
	}
	start := 0
	for i := 0; ; {
		j := bytes.IndexByte(data[i:], '\n')
		if j < 0 {
			break
		}
		j += i
		bare := j == 0 || data[j-1] != '\r'
		dot := j+1 < len(data) && data[j+1] == '.'
		if bare || dot {
			w.Write(data[start:j])
			if bare {
				w.WriteByte('\r')
			}
			w.WriteByte('\n')
			if dot {
				w.WriteByte('.')
			}
			start = j + 1
		}
		i = j + 1
	}
	w.Write(data[start:])
	if data[len(data)-1] != '\n' {
		w.WriteString("\r\n")
	}
	w.WriteString(".\r\n")
}

// Reset sends RSET, abandoning any open transaction (RFC 5321 §4.1.1.5).
// Send resets by itself when needed; Reset is for a caller that wants to
// check the session before reuse. Errors are *Error with Phase quit, or
// ErrClosed.
func (c *Client) Reset(ctx context.Context) (err error) {
	return c.simple(ctx, "RSET\r\n", func() { c.needReset = false })
}

// Noop sends NOOP (RFC 5321 §4.1.1.9) to check that an idle session is
// still alive before reusing it. Errors are *Error with Phase quit, or
// ErrClosed.
func (c *Client) Noop(ctx context.Context) error {
	return c.simple(ctx, "NOOP\r\n", nil)
}

func (c *Client) simple(ctx context.Context, cmd string, ok func()) (err error) {
	if err := c.usable(ctx, PhaseQuit); err != nil {
		return err
	}
	stop := c.watch(ctx)
	defer func() {
		if !c.unwatch(stop) && err != nil {
			err = c.ctxError(ctx, err)
		}
	}()
	c.w.WriteString(cmd)
	if err := c.expect2xx(PhaseQuit, c.t.Command); err != nil {
		return err
	}
	if ok != nil {
		ok()
	}
	return nil
}

// Quit ends the session politely (RFC 5321 §4.1.1.10) and closes the
// connection, whatever the server answers. It returns an *Error when the
// QUIT could not be sent or its reply read; the connection is closed
// either way.
func (c *Client) Quit(ctx context.Context) (err error) {
	if err := c.usable(ctx, PhaseQuit); err != nil {
		c.Close()
		return err
	}
	stop := c.watch(ctx)
	defer func() {
		if !c.unwatch(stop) && err != nil {
			err = c.ctxError(ctx, err)
		}
		c.Close()
	}()
	c.w.WriteString("QUIT\r\n")
	return c.roundTrip(PhaseQuit, c.t.Command)
}

// quietQuit says QUIT after a refusal, without caring for the answer.
func (c *Client) quietQuit() {
	if c.closed.Load() {
		return
	}
	c.w.WriteString("QUIT\r\n")
	c.roundTrip(PhaseQuit, time.Second)
}

// Close closes the connection without QUIT. It is safe to call more than
// once and concurrently with other methods (which then fail).
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.raw.Close()
}

// Sent returns how many messages this session delivered (final reply
// 2xx), for a per-connection message limit.
func (c *Client) Sent() int { return c.sent }

// TLS tells whether the session runs over TLS and whether the server's
// certificate verified for the MX name.
func (c *Client) TLS() (used, verified bool) { return c.tlsUsed, c.tlsVerified }

// TLSVersion returns the negotiated TLS version, 0 without TLS.
func (c *Client) TLSVersion() uint16 { return c.tlsVersion }

// TLSFallbackError returns why an opportunistic TLS handshake failed when
// the session was re-established in plaintext, else nil.
func (c *Client) TLSFallbackError() error { return c.tlsFailed }

// Extensions returns a copy of the EHLO keywords (upper case) with their
// parameters; empty after HELO.
func (c *Client) Extensions() map[string]string { return maps.Clone(c.exts) }

// Extension reports whether the server offered keyword (case-insensitive
// match on the upper-case keyword) and its parameters.
func (c *Client) Extension(keyword string) (params string, ok bool) {
	params, ok = c.exts[strings.ToUpper(keyword)]
	return params, ok
}

// RemoteAddr returns the dialled address; LocalAddr the local end.
func (c *Client) RemoteAddr() string { return c.addr }

// LocalAddr returns the local address of the connection.
func (c *Client) LocalAddr() net.Addr { return c.local }

// Closed reports whether the session can no longer be used.
func (c *Client) Closed() bool { return c.closed.Load() }

func (c *Client) setExtensions(exts map[string]string) {
	c.exts = exts
	_, c.pipelining = exts["PIPELINING"]
	_, c.eightBit = exts["8BITMIME"]
	_, c.smtputf8 = exts["SMTPUTF8"]
	var size string
	size, c.hasSize = exts["SIZE"]
	c.sizeLimit = 0
	if n, err := strconv.ParseInt(size, 10, 64); err == nil && n > 0 {
		c.sizeLimit = n
	}
}

// usable checks, before a command, that the session is open and ctx live.
func (c *Client) usable(ctx context.Context, p Phase) error {
	if c.closed.Load() {
		return &Error{Phase: p, Err: ErrClosed}
	}
	if ctx.Err() != nil {
		return &Error{Phase: p, Err: context.Cause(ctx)}
	}
	return nil
}

// watch closes the connection when ctx is done, which unblocks any read
// or write. The returned stop must be passed to unwatch.
func (c *Client) watch(ctx context.Context) func() bool {
	if ctx.Done() == nil {
		return nil
	}
	return context.AfterFunc(ctx, c.abort)
}

// unwatch stops watching; it returns false when ctx fired.
func (c *Client) unwatch(stop func() bool) bool {
	if stop == nil {
		return true
	}
	return stop()
}

// ctxError replaces the network error caused by closing the connection
// with ctx's error, keeping the phase.
func (c *Client) ctxError(ctx context.Context, err error) error {
	c.Close()
	var e *Error
	if errors.As(err, &e) && e.Code == 0 {
		return &Error{Phase: e.Phase, Err: context.Cause(ctx)}
	}
	return err
}

// flush writes the buffered commands.
func (c *Client) flush(p Phase) error {
	if err := c.w.Flush(); err != nil {
		c.Close()
		return &Error{Phase: p, Err: err}
	}
	return nil
}

// readReply reads one reply into c.rep within timeout. A network or
// protocol error closes the session. A 421 reply closes it too, since the
// server is about to (RFC 5321 §3.8), but is returned as a reply.
func (c *Client) readReply(p Phase, timeout time.Duration) error {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	if err := c.rep.read(c.r); err != nil {
		c.Close()
		return &Error{Phase: p, Err: err}
	}
	if c.rep.code == 421 {
		c.Close()
	}
	return nil
}

// roundTrip flushes the buffered command and reads its reply.
func (c *Client) roundTrip(p Phase, timeout time.Duration) error {
	c.cw.timeout = timeout
	if err := c.flush(p); err != nil {
		return err
	}
	return c.readReply(p, timeout)
}

// expect2xx is roundTrip that turns any non-2xx reply into an error.
func (c *Client) expect2xx(p Phase, timeout time.Duration) error {
	if err := c.roundTrip(p, timeout); err != nil {
		return err
	}
	if c.rep.class() != 2 {
		return c.replyError(p)
	}
	return nil
}

// replyError makes an *Error of the reply in c.rep.
func (c *Client) replyError(p Phase) *Error {
	e := &Error{Phase: p, Code: c.rep.code, EnhancedCode: c.rep.enhanced(), Message: c.rep.message()}
	if c.rep.code == 421 {
		e.Err = ErrClosed
	}
	return e
}

// validPath rejects what would break the command line: controls (CR, LF
// inject commands) and angle brackets.
func validPath(s string) bool {
	for i := 0; i < len(s); i++ {
		switch b := s[i]; {
		case b < 0x20, b == 0x7f, b == '<', b == '>':
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// isASCIIBytes checks eight bytes at a time; it runs on every message.
func isASCIIBytes(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b)&0x8080808080808080 != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}
