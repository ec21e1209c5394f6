package smtpclient_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailwave/mailwave/pkg/smtpclient"
)

// received is one message as the test server saw it.
type received struct {
	Remote   netip.Addr // source IP of the connection
	Hello    string     // EHLO/HELO name at MAIL time
	TLS      bool
	From     string
	Opts     smtp.MailOptions
	Rcpts    []string
	Data     []byte
	ConnSeq  int // which connection (1-based) carried it
	Resetted int // RSETs seen on the connection before this MAIL
}

// backend is a hand-written go-smtp backend that records what it receives
// and refuses what the test asks it to.
type backend struct {
	mu       sync.Mutex
	msgs     []received
	conns    int
	rcptErr  map[string]*smtp.SMTPError // per recipient
	mailErr  *smtp.SMTPError
	dataErr  *smtp.SMTPError
	notifyCh chan struct{}
}

func newBackend() *backend {
	return &backend{rcptErr: map[string]*smtp.SMTPError{}, notifyCh: make(chan struct{}, 100)}
}

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.conns++
	return &session{b: b, c: c, seq: b.conns}, nil
}

func (b *backend) messages() []received {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]received(nil), b.msgs...)
}

func (b *backend) connections() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.conns
}

type session struct {
	b      *backend
	c      *smtp.Conn
	seq    int
	cur    received
	resets int
}

func (s *session) Reset() {
	s.resets++
	s.cur = received{}
}

func (s *session) Logout() error { return nil }

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if s.b.mailErr != nil {
		return s.b.mailErr
	}
	ap, _ := netip.ParseAddrPort(s.c.Conn().RemoteAddr().String())
	_, isTLS := s.c.TLSConnectionState()
	s.cur = received{Remote: ap.Addr(), Hello: s.c.Hostname(), TLS: isTLS, From: from, ConnSeq: s.seq, Resetted: s.resets}
	if opts != nil {
		s.cur.Opts = *opts
	}
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if e := s.b.rcptErr[to]; e != nil {
		return e
	}
	s.cur.Rcpts = append(s.cur.Rcpts, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if s.b.dataErr != nil {
		return s.b.dataErr
	}
	s.cur.Data = data
	s.b.msgs = append(s.b.msgs, s.cur)
	select {
	case s.b.notifyCh <- struct{}{}:
	default:
	}
	return nil
}

// startServer runs a go-smtp server on ip:0 and returns its address.
func startServer(t testing.TB, ip string, be smtp.Backend, configure func(*smtp.Server)) string {
	t.Helper()
	s := smtp.NewServer(be)
	s.Domain = "mx.test"
	s.ReadTimeout = 10 * time.Second
	s.WriteTimeout = 10 * time.Second
	if configure != nil {
		configure(s)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(l)
	}()
	t.Cleanup(func() {
		s.Close()
		<-done
	})
	return l.Addr().String()
}

// selfSigned returns a server certificate for names and a pool trusting it.
func selfSigned(t testing.TB, names ...string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              names,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
}

// scripted runs a hand-written SMTP server on 127.0.0.1:0: handle gets
// each connection. It is for behaviour go-smtp cannot be made to show.
func scripted(t testing.TB, handle func(c net.Conn, r *bufio.Reader)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				handle(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// readCmd reads one command line without CRLF.
func readCmd(r *bufio.Reader) (string, error) {
	l, err := r.ReadString('\n')
	return strings.TrimRight(l, "\r\n"), err
}

// readData reads message content up to the terminating ".".
func readData(r *bufio.Reader) error {
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if l == ".\r\n" {
			return nil
		}
	}
}

func dialer(helo string) *smtpclient.Dialer {
	return &smtpclient.Dialer{HelloName: helo, Timeouts: smtpclient.Timeouts{
		Connect: 5 * time.Second, Greeting: 5 * time.Second, Command: 5 * time.Second,
		Mail: 5 * time.Second, Rcpt: 5 * time.Second, DataInit: 5 * time.Second,
		DataBlock: 5 * time.Second, DataTerm: 5 * time.Second,
	}}
}

func asError(t testing.TB, err error) *smtpclient.Error {
	t.Helper()
	var e *smtpclient.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not *smtpclient.Error", err, err)
	}
	return e
}

// message builds a CRLF message of about size bytes.
func message(size int) []byte {
	var b strings.Builder
	b.WriteString("From: a@sender.test\r\nTo: b@dest.test\r\nSubject: test\r\nMessage-ID: <x@sender.test>\r\n\r\n")
	line := strings.Repeat("abcdefghij", 7) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return []byte(b.String())
}
