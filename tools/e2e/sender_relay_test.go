package e2e_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/sender/sender"
	"github.com/mailwave/mailwave/tools/stack"
)

// relayCert is a self-signed certificate for 127.0.0.1 and the PEM a
// route's ca_file trusts it with.
func relayCert(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay.test"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// smarthost is a provider's relay server: AUTH PLAIN required before
// MAIL, over STARTTLS or implicit TLS. It records logins and messages.
type smarthost struct {
	user, pass string
	// authErr, when set, answers every AUTH (a relay that is failing).
	authErr *smtp.SMTPError
	// open takes mail without AUTH (an internal relay).
	open bool
	addr string

	mu       sync.Mutex
	attempts int
	logins   []string
	msgs     []relayed
}

type relayed struct {
	user, from string
	rcpts      []string
	tls        bool
	source     netip.Addr
	data       []byte
}

func (h *smarthost) start(t *testing.T, cert tls.Certificate, implicit bool) {
	t.Helper()
	s := smtp.NewServer(h)
	s.Domain = "relay.test"
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	var l net.Listener
	var err error
	if implicit {
		l, err = tls.Listen("tcp", "127.0.0.1:0", cfg)
	} else {
		s.TLSConfig = cfg
		l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	h.addr = l.Addr().String()
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(l) }()
	t.Cleanup(func() { s.Close(); <-done })
}

func (h *smarthost) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &relaySession{h: h, c: c}, nil
}

func (h *smarthost) snapshot() (attempts int, logins []string, msgs []relayed) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.attempts, append([]string(nil), h.logins...), append([]relayed(nil), h.msgs...)
}

type relaySession struct {
	h    *smarthost
	c    *smtp.Conn
	user string
	cur  relayed
}

func (s *relaySession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *relaySession) Auth(string) (sasl.Server, error) {
	s.h.mu.Lock()
	s.h.attempts++
	s.h.mu.Unlock()
	if s.h.authErr != nil {
		return nil, s.h.authErr
	}
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != s.h.user || pass != s.h.pass {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
		}
		s.user = user
		s.h.mu.Lock()
		s.h.logins = append(s.h.logins, user)
		s.h.mu.Unlock()
		return nil
	}), nil
}

func (s *relaySession) Mail(from string, _ *smtp.MailOptions) error {
	if s.user == "" && !s.h.open {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	_, isTLS := s.c.TLSConnectionState()
	ap, _ := netip.ParseAddrPort(s.c.Conn().RemoteAddr().String())
	s.cur = relayed{user: s.user, from: from, tls: isTLS, source: ap.Addr()}
	return nil
}

func (s *relaySession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.cur.rcpts = append(s.cur.rcpts, to)
	return nil
}

func (s *relaySession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.data = b
	s.h.mu.Lock()
	s.h.msgs = append(s.h.msgs, s.cur)
	s.h.mu.Unlock()
	return nil
}

func (s *relaySession) Reset()        { s.cur = relayed{} }
func (s *relaySession) Logout() error { return nil }

// startPlainSmarthost runs an open relay without TLS and returns its
// address.
func startPlainSmarthost(t *testing.T, h *smarthost) string {
	t.Helper()
	h.open = true
	s := smtp.NewServer(h)
	s.Domain = "plain-relay.test"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = l.Addr().String()
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(l) }()
	t.Cleanup(func() { s.Close(); <-done })
	return h.addr
}

// closedPort is an address nothing listens on: a smarthost that is down.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// A tenant's mail goes through its relay route instead of MX: the first
// smarthost is down, the second answers 454 to AUTH, the third (implicit
// TLS) takes the message after a verified handshake and AUTH PLAIN. A
// route the planner names in the routing is used the same way.
func TestRelayRouteFailsOverToTheNextSmarthost(t *testing.T) {
	cert, caPEM := relayCert(t)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pwFile, []byte("relay-s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	failing := &smarthost{user: "relay-user", pass: "relay-s3cret",
		authErr: &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure"}}
	failing.start(t, cert, false)
	good := &smarthost{user: "relay-user", pass: "relay-s3cret"}
	good.start(t, cert, true)
	routes := filepath.Join(dir, "relay.yaml")
	yaml := fmt.Sprintf(`routes:
  esp:
    verify_tls: true
    ca_file: %s
    smarthosts:
      - {address: "%s"}
      - address: "%s"
        auth: {username: relay-user, password_file: %s}
      - address: "%s"
        tls: implicit
        auth: {username: relay-user, password_file: %s, mechanism: plain}
select:
  - {route: esp, tenants: [relayco]}
`, caFile, closedPort(t), failing.addr, pwFile, good.addr, pwFile)
	if err := os.WriteFile(routes, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startWith(t, nil, func(o *stack.Options) {
		o.TuneSender = func(c *sender.Config) { c.RelayRoutes = routes }
	})
	ctx := testenv.Context(t)
	if _, err := e.cl.Send(ctx, &mailwavev1.SendRequest{IdempotencyKey: "relay-1", Tenant: "relayco", Brand: "shop",
		Recipients: recipients("dee@gmail.com"), Content: template("Shop <news@mailwave.test>")}); err != nil {
		t.Fatal(err)
	}
	ev := e.terminal(t, "relayco", "relay-1", 1)["dee@gmail.com"]
	if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED || ev.GetProvider() != "esp" ||
		ev.GetRemoteIp() != good.addr || !ev.GetTls() {
		t.Fatalf("event %v via %s (%s) tls %v: %s", ev.GetKind(), ev.GetProvider(), ev.GetRemoteIp(), ev.GetTls(), ev.GetResponse())
	}
	// The planner names the route for a tenant no rule selects.
	e.dispatch(t, &mailwavev1.DispatchMessage{RequestId: "relay-2", Tenant: "acme", Recipient: "eve@yahoo.com",
		Routing: &mailwavev1.Routing{RelayRoute: "esp"}})
	if ev := e.terminal(t, "acme", "relay-2", 1)["eve@yahoo.com"]; ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED || ev.GetProvider() != "esp" {
		t.Fatalf("named route: %v via %s: %s", ev.GetKind(), ev.GetProvider(), ev.GetResponse())
	}

	_, logins, msgs := good.snapshot()
	if len(msgs) != 2 || len(logins) == 0 {
		t.Fatalf("the good smarthost got %d messages after %d logins", len(msgs), len(logins))
	}
	for _, m := range msgs {
		if m.user != "relay-user" || !m.tls || m.source.String() != "127.0.0.3" || len(m.rcpts) != 1 {
			t.Errorf("relayed %v as %q, TLS %v, from %s", m.rcpts, m.user, m.tls, m.source)
		}
	}
	if attempts, _, fmsgs := failing.snapshot(); attempts == 0 || len(fmsgs) != 0 {
		t.Errorf("the failing smarthost saw %d AUTH attempts and %d messages", attempts, len(fmsgs))
	}
	snap := e.sim.Ledger().Snapshot()
	if n := len(snap.To("dee@gmail.com")) + len(snap.To("eve@yahoo.com")); n != 0 {
		t.Errorf("relayed mail also went by MX (%d copies)", n)
	}
}
