package smtpclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"golang.org/x/net/proxy"
)

// ErrInvalidDialer is returned (not inside an *Error) by Dial when the
// Dialer's configuration cannot work: no HelloName, or an unparsable
// SOCKS5 address.
var ErrInvalidDialer = errors.New("smtpclient: invalid dialer")

// Timeouts bound each phase of a session. A zero field takes the default,
// which is the RFC 5321 §4.5.3.2 minimum where the RFC gives one.
type Timeouts struct {
	// Connect bounds the TCP connect and the SOCKS5 negotiation. Default 30s.
	Connect time.Duration
	// Greeting waits for the 220 banner. Default 5 min (§4.5.3.2.1).
	Greeting time.Duration
	// Command waits for the replies to EHLO, HELO, STARTTLS, RSET, NOOP and
	// QUIT and bounds the TLS handshake. Default 5 min.
	Command time.Duration
	// Mail waits for the reply to MAIL. Default 5 min (§4.5.3.2.2).
	Mail time.Duration
	// Rcpt waits for the reply to each RCPT. Default 5 min (§4.5.3.2.3).
	Rcpt time.Duration
	// DataInit waits for the 354 reply to DATA. Default 2 min (§4.5.3.2.4).
	DataInit time.Duration
	// DataBlock bounds each write of message content. Default 3 min
	// (§4.5.3.2.5).
	DataBlock time.Duration
	// DataTerm waits for the reply to the final ".". Default 10 min
	// (§4.5.3.2.6).
	DataTerm time.Duration
}

func (t Timeouts) withDefaults() Timeouts {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.Connect, 30*time.Second)
	def(&t.Greeting, 5*time.Minute)
	def(&t.Command, 5*time.Minute)
	def(&t.Mail, 5*time.Minute)
	def(&t.Rcpt, 5*time.Minute)
	def(&t.DataInit, 2*time.Minute)
	def(&t.DataBlock, 3*time.Minute)
	def(&t.DataTerm, 10*time.Minute)
	return t
}

// Dialer opens SMTP sessions from one source. Configuration is exported
// fields; a Dialer is safe for concurrent use and may be copied.
type Dialer struct {
	// LocalAddr is the source IP to bind, the zero Addr for the system's
	// choice. With SOCKS5 it binds the connection to the proxy.
	LocalAddr netip.Addr
	// SOCKS5 is the proxy through which this source egresses: "host:port"
	// or "socks5://user:password@host:port" (RFC 1928, RFC 1929).
	SOCKS5 string
	// HelloName is the name sent with EHLO/HELO: the source IP's hostname,
	// whose A record should match the IP (RFC 5321 §4.1.4). Required.
	HelloName string
	// TLSConfig is cloned for each STARTTLS. ServerName is set to Dial's
	// serverName; verification is done by the client itself so that an
	// opportunistic session can record whether it verified, hence
	// InsecureSkipVerify and VerifyConnection are overwritten. RootCAs
	// (nil: the system pool) and Time are used for the verification.
	TLSConfig *tls.Config
	// RequireTLS fails the session with ErrTLSRequired when STARTTLS is
	// not offered, is refused, or the handshake fails. Without it, TLS is
	// opportunistic (RFC 7435): used when offered, whatever the
	// certificate, and a failed handshake is retried in plaintext on a new
	// connection.
	RequireTLS bool
	// RequireVerifiedTLS implies RequireTLS and also fails with
	// ErrTLSUnverified when the certificate does not verify for
	// serverName.
	RequireVerifiedTLS bool
	// DisableTLS never uses STARTTLS (for a route known to have a broken
	// TLS stack). RequireTLS and ImplicitTLS win over it.
	DisableTLS bool
	// ImplicitTLS starts TLS as soon as the connection is open, before
	// the greeting, instead of STARTTLS: the "submissions" port 465 of
	// RFC 8314 §3.3 that relays offer. The handshake must succeed; there
	// is no plaintext fallback. RequireVerifiedTLS applies to it.
	ImplicitTLS bool
	// Auth, when set, authenticates each session after EHLO (RFC 4954)
	// with the SASL client it returns for the mechanisms the server
	// offers (PasswordAuth makes the usual one). Credentials are only
	// sent over TLS: a session that is not encrypted fails with
	// ErrAuthNeedsTLS before AUTH is said.
	Auth func(offered []string) (sasl.Client, error)
	// Timeouts per phase; zero fields take the RFC 5321 defaults.
	Timeouts Timeouts
	// Logger receives one record per session event worth knowing (TLS
	// fallback); nil discards.
	Logger *slog.Logger
}

// Dial connects to addr ("host:port", usually an MX address and port 25),
// reads the greeting, says EHLO (HELO when EHLO is refused with 500 or
// 502), and upgrades with STARTTLS when offered, then says EHLO again (RFC
// 3207 §4.2); with ImplicitTLS the handshake comes before the greeting
// instead. With Auth it then authenticates. serverName is the MX or relay
// host name, used for SNI and certificate verification.
//
// Errors are *Error with Phase connect, greeting, ehlo, starttls or auth; a 4xx
// or 5xx greeting is returned as such (the connection is closed after a
// polite QUIT). ErrTLSRequired and ErrTLSUnverified come wrapped in a
// starttls *Error. A configuration mistake returns ErrInvalidDialer.
// When ctx is done before Dial returns, the connection is closed and the
// error wraps ctx's error.
func (d *Dialer) Dial(ctx context.Context, addr, serverName string) (*Client, error) {
	if d.HelloName == "" || strings.ContainsAny(d.HelloName, " \r\n") {
		return nil, fmt.Errorf("%w: HelloName %q", ErrInvalidDialer, d.HelloName)
	}
	if d.SOCKS5 != "" {
		if _, _, err := parseSOCKS5(d.SOCKS5); err != nil {
			return nil, err
		}
	}
	tlsMode := tlsOpportunistic
	switch {
	case d.RequireTLS || d.RequireVerifiedTLS || d.ImplicitTLS:
		tlsMode = tlsRequired
	case d.DisableTLS:
		tlsMode = tlsNone
	}
	c, err := d.dial(ctx, addr, serverName, tlsMode)
	var fb *tlsFallback
	if errors.As(err, &fb) {
		d.logger().LogAttrs(ctx, slog.LevelInfo, "smtp tls handshake failed, retrying in plaintext",
			slog.String("addr", addr), slog.String("server", serverName), slog.Any("error", fb.err))
		c, err = d.dial(ctx, addr, serverName, tlsNone)
		if c != nil {
			c.tlsFailed = fb.err
		}
	}
	return c, err
}

type tlsMode int

const (
	tlsOpportunistic tlsMode = iota
	tlsRequired
	tlsNone
)

// tlsFallback tells Dial that an opportunistic handshake failed and the
// session should be retried in plaintext on a new connection, since the
// failed one is in an unknown state.
type tlsFallback struct{ err error }

func (f *tlsFallback) Error() string { return "smtpclient: tls fallback: " + f.err.Error() }

func (d *Dialer) logger() *slog.Logger {
	if d.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Logger
}

func (d *Dialer) dial(ctx context.Context, addr, serverName string, mode tlsMode) (_ *Client, err error) {
	t := d.Timeouts.withDefaults()
	raw, err := d.connect(ctx, addr, t.Connect)
	if err != nil {
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return nil, &Error{Phase: PhaseConnect, Err: err}
	}
	c := newClient(raw, addr, d.HelloName, t)
	stop := c.watch(ctx)
	defer func() {
		if !c.unwatch(stop) && err != nil {
			err = c.ctxError(ctx, err)
		}
		if err != nil {
			c.Close()
		}
	}()

	if d.ImplicitTLS {
		// RFC 8314 §3.3: the TLS handshake comes first, the greeting
		// arrives encrypted.
		if err := c.handshake(ctx, d, serverName, tlsRequired); err != nil {
			return nil, err
		}
	}
	if err := c.readReply(PhaseGreeting, t.Greeting); err != nil {
		return nil, err
	}
	if c.rep.class() != 2 {
		e := c.replyError(PhaseGreeting)
		// RFC 5321 §3.1: after a 554 greeting the client should QUIT.
		c.quietQuit()
		return nil, e
	}
	if err := c.hello(); err != nil {
		return nil, err
	}
	if err := c.upgrade(ctx, d, serverName, mode); err != nil {
		return nil, err
	}
	if d.Auth != nil {
		if err := c.auth(d.Auth); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// upgrade says STARTTLS when the session is not encrypted yet and mode
// wants TLS.
func (c *Client) upgrade(ctx context.Context, d *Dialer, serverName string, mode tlsMode) error {
	if mode == tlsNone || c.tlsUsed {
		return nil
	}
	if _, ok := c.exts["STARTTLS"]; !ok {
		if mode == tlsRequired {
			c.quietQuit()
			return &Error{Phase: PhaseStartTLS, Err: fmt.Errorf("%w: STARTTLS not offered", ErrTLSRequired)}
		}
		return nil
	}
	return c.startTLS(ctx, d, serverName, mode)
}

// connect opens the TCP connection, from LocalAddr, directly or through
// the SOCKS5 proxy.
func (d *Dialer) connect(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	nd := &net.Dialer{Timeout: timeout}
	if d.LocalAddr.IsValid() {
		nd.LocalAddr = &net.TCPAddr{IP: d.LocalAddr.AsSlice(), Zone: d.LocalAddr.Zone()}
	}
	if d.SOCKS5 == "" {
		return nd.DialContext(ctx, "tcp", addr)
	}
	hostport, auth, err := parseSOCKS5(d.SOCKS5)
	if err != nil {
		return nil, err
	}
	pd, err := proxy.SOCKS5("tcp", hostport, auth, nd)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidDialer, err)
	}
	cd, ok := pd.(proxy.ContextDialer)
	if !ok {
		return nil, fmt.Errorf("%w: socks5 dialer without context support", ErrInvalidDialer)
	}
	// The proxy's handshake is part of the connect phase.
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return cd.DialContext(ctx, "tcp", addr)
}

func parseSOCKS5(s string) (string, *proxy.Auth, error) {
	if !strings.Contains(s, "://") {
		return s, nil, nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "socks5" || u.Host == "" {
		return "", nil, fmt.Errorf("%w: SOCKS5 %q", ErrInvalidDialer, redact(s))
	}
	var auth *proxy.Auth
	if u.User != nil {
		pw, _ := u.User.Password()
		auth = &proxy.Auth{User: u.User.Username(), Password: pw}
	}
	return u.Host, auth, nil
}

// redact removes the password from a proxy URL before it is logged.
func redact(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return "(unparsable)"
}

// hello says EHLO, or HELO when the server does not know EHLO (RFC 5321
// §4.1.1.1, §3.2).
func (c *Client) hello() error {
	c.w.WriteString("EHLO ")
	c.w.WriteString(c.helloName)
	c.w.WriteString("\r\n")
	if err := c.roundTrip(PhaseEHLO, c.t.Command); err != nil {
		return err
	}
	if c.rep.class() == 2 {
		c.parseExtensions()
		return nil
	}
	if c.rep.code != 500 && c.rep.code != 502 {
		return c.replyError(PhaseEHLO)
	}
	c.w.WriteString("HELO ")
	c.w.WriteString(c.helloName)
	c.w.WriteString("\r\n")
	if err := c.roundTrip(PhaseEHLO, c.t.Command); err != nil {
		return err
	}
	if c.rep.class() != 2 {
		return c.replyError(PhaseEHLO)
	}
	c.setExtensions(map[string]string{})
	return nil
}

// parseExtensions reads the EHLO reply: the first line greets, each other
// line is a keyword with optional parameters (RFC 5321 §4.1.1.1).
func (c *Client) parseExtensions() {
	exts := map[string]string{}
	lines := strings.Split(c.rep.message(), "\n")
	for _, l := range lines[1:] {
		kw, params, _ := strings.Cut(strings.TrimSpace(l), " ")
		if kw != "" {
			exts[strings.ToUpper(kw)] = strings.TrimSpace(params)
		}
	}
	c.setExtensions(exts)
}

// startTLS upgrades the connection (RFC 3207) and says EHLO again, since
// the server forgets what it learned before the handshake (§4.2).
func (c *Client) startTLS(ctx context.Context, d *Dialer, serverName string, mode tlsMode) error {
	c.w.WriteString("STARTTLS\r\n")
	if err := c.roundTrip(PhaseStartTLS, c.t.Command); err != nil {
		return err
	}
	if c.rep.code != 220 {
		if c.rep.code == 421 {
			return c.replyError(PhaseStartTLS)
		}
		if mode == tlsRequired {
			e := c.replyError(PhaseStartTLS)
			e.Err = ErrTLSRequired
			c.quietQuit()
			return e
		}
		// RFC 3207 §4: the session goes on in plaintext after a refusal.
		return nil
	}
	// Bytes already buffered after the 220 were sent before the handshake
	// and must not be trusted as if they came through TLS (CVE-2011-0411
	// class of injection).
	if c.r.Buffered() > 0 {
		return &Error{Phase: PhaseStartTLS, Err: fmt.Errorf("%w: data after STARTTLS reply", ErrProtocol)}
	}
	if err := c.handshake(ctx, d, serverName, mode); err != nil {
		return err
	}
	return c.hello()
}

// handshake runs the TLS client handshake on the connection and switches
// the session to it. An opportunistic handshake that fails returns a
// *tlsFallback.
func (c *Client) handshake(ctx context.Context, d *Dialer, serverName string, mode tlsMode) error {
	var cfg *tls.Config
	if d.TLSConfig != nil {
		cfg = d.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.MinVersion == 0 && !d.RequireVerifiedTLS {
		// Opportunistic TLS: an old TLS version still beats plaintext
		// (RFC 7435 §1.2), which is the alternative.
		cfg.MinVersion = tls.VersionTLS10
	}
	cfg.ServerName = serverName
	cfg.InsecureSkipVerify = true
	roots, verifyTime := cfg.RootCAs, cfg.Time
	verified := false
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		verified = verifyChain(cs, serverName, roots, verifyTime)
		if !verified && d.RequireVerifiedTLS {
			return ErrTLSUnverified
		}
		return nil
	}
	tc := tls.Client(c.raw, cfg)
	c.raw.SetDeadline(time.Now().Add(c.t.Command))
	if err := tc.HandshakeContext(ctx); err != nil {
		switch {
		case errors.Is(err, ErrTLSUnverified):
			return &Error{Phase: PhaseStartTLS, Err: ErrTLSUnverified}
		case mode == tlsRequired:
			return &Error{Phase: PhaseStartTLS, Err: fmt.Errorf("%w: %w", ErrTLSRequired, err)}
		case ctx.Err() != nil:
			return &Error{Phase: PhaseStartTLS, Err: err}
		}
		return &tlsFallback{err: err}
	}
	c.setConn(tc)
	c.tlsUsed, c.tlsVerified = true, verified
	st := tc.ConnectionState()
	c.tlsVersion = st.Version
	return nil
}

// verifyChain checks the peer's chain as crypto/tls would have, reporting
// the result instead of failing the handshake.
func verifyChain(cs tls.ConnectionState, serverName string, roots *x509.CertPool, now func() time.Time) bool {
	if len(cs.PeerCertificates) == 0 || serverName == "" {
		return false
	}
	opts := x509.VerifyOptions{
		DNSName:       serverName,
		Roots:         roots,
		Intermediates: x509.NewCertPool(),
	}
	if now != nil {
		opts.CurrentTime = now()
	}
	for _, ic := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(ic)
	}
	_, err := cs.PeerCertificates[0].Verify(opts)
	return err == nil
}

// newClient wraps a connected socket.
func newClient(raw net.Conn, addr, helloName string, t Timeouts) *Client {
	c := &Client{raw: raw, addr: addr, helloName: helloName, t: t, local: raw.LocalAddr()}
	c.cw = &connWriter{conn: raw}
	c.r = bufio.NewReaderSize(raw, 4096)
	c.w = bufio.NewWriterSize(c.cw, 16<<10)
	c.conn = raw
	c.abort = func() { c.Close() }
	return c
}

// setConn switches the buffered reader and writer to the TLS connection.
func (c *Client) setConn(conn net.Conn) {
	c.conn = conn
	c.cw.conn = conn
	c.r.Reset(conn)
	c.w.Reset(c.cw)
}
