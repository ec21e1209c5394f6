package smtpclient_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailwave/mailwave/pkg/smtpclient"
)

// authBackend is a relay that wants AUTH before MAIL, with PLAIN and a
// LOGIN that prompts for the user name first, as Postfix and Exchange do.
type authBackend struct {
	*backend
	user, pass string
	mechs      []string
	mu         sync.Mutex
	logins     []string // "MECH user" per successful AUTH
}

func (b *authBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s, _ := b.backend.NewSession(c)
	return &authSession{session: s.(*session), b: b}, nil
}

type authSession struct {
	*session
	b      *authBackend
	authed bool
}

func (s *authSession) AuthMechanisms() []string { return s.b.mechs }

var errBadCredentials = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}

func (s *authSession) check(mech, user, pass string) error {
	if user != s.b.user || pass != s.b.pass {
		return errBadCredentials
	}
	s.authed = true
	s.b.mu.Lock()
	s.b.logins = append(s.b.logins, mech+" "+user)
	s.b.mu.Unlock()
	return nil
}

func (s *authSession) Auth(mech string) (sasl.Server, error) {
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, pass string) error { return s.check(mech, user, pass) }), nil
	case sasl.Login:
		return &loginServer{check: func(u, p string) error { return s.check(mech, u, p) }}, nil
	}
	return nil, errors.New("unsupported mechanism")
}

func (s *authSession) Mail(from string, opts *smtp.MailOptions) error {
	if !s.authed {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	return s.session.Mail(from, opts)
}

// loginServer is the server side of LOGIN: "Username:", then "Password:".
type loginServer struct {
	check func(user, pass string) error
	step  int
	user  string
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step = 1
		if resp != nil {
			l.user, l.step = string(resp), 2
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.user, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(l.user, string(resp))
	}
}

func (b *authBackend) loginsSeen() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.logins...)
}

func TestAuth(t *testing.T) {
	cert, _ := selfSigned(t, "relay.test")
	starttls := func(s *smtp.Server) { s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}} }
	tests := []struct {
		name      string
		mechs     []string // offered by the server
		pass      string   // the client's password
		clientM   []string // the client's preference
		server    func(*smtp.Server)
		wantLogin string
		wantErr   error
		wantCode  int
	}{
		{name: "plain", mechs: []string{"PLAIN", "LOGIN"}, pass: "s3cret", server: starttls, wantLogin: "PLAIN relay-user"},
		{name: "login only", mechs: []string{"LOGIN"}, pass: "s3cret", server: starttls, wantLogin: "LOGIN relay-user"},
		{name: "login preferred", mechs: []string{"PLAIN", "LOGIN"}, clientM: []string{"LOGIN"}, pass: "s3cret", server: starttls, wantLogin: "LOGIN relay-user"},
		{name: "bad password", mechs: []string{"PLAIN"}, pass: "wrong", server: starttls, wantCode: 535},
		{name: "no common mechanism", mechs: []string{"CRAM-MD5"}, pass: "s3cret", server: starttls, wantErr: smtpclient.ErrAuthUnsupported},
		{name: "no tls, no credentials sent", mechs: []string{"PLAIN"}, pass: "s3cret",
			server: func(s *smtp.Server) { s.AllowInsecureAuth = true }, wantErr: smtpclient.ErrAuthNeedsTLS},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			be := &authBackend{backend: newBackend(), user: "relay-user", pass: "s3cret", mechs: tc.mechs}
			addr := startServer(t, "127.0.0.1", be, tc.server)
			d := dialer("out.sender.test")
			d.Auth = smtpclient.PasswordAuth("relay-user", tc.pass, tc.clientM...)
			c, err := d.Dial(t.Context(), addr, "relay.test")
			if tc.wantErr != nil || tc.wantCode != 0 {
				if err == nil {
					c.Close()
					t.Fatal("Dial succeeded")
				}
				e := asError(t, err)
				if e.Phase != smtpclient.PhaseAuth || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) || e.Code != tc.wantCode {
					t.Fatalf("error %v (phase %s code %d), want %v code %d", err, e.Phase, e.Code, tc.wantErr, tc.wantCode)
				}
				if strings.Contains(err.Error(), tc.pass) {
					t.Errorf("the error quotes the password: %v", err)
				}
				if len(be.loginsSeen()) != 0 {
					t.Errorf("logins %v", be.loginsSeen())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Send(t.Context(), "a@sender.test", []string{"b@dest.test"}, message(300), smtpclient.SendOptions{}); err != nil {
				t.Fatal(err)
			}
			if got := be.loginsSeen(); len(got) != 1 || got[0] != tc.wantLogin {
				t.Errorf("logins %v, want [%s]", got, tc.wantLogin)
			}
			if m := be.messages(); len(m) != 1 || !m[0].TLS {
				t.Errorf("messages %+v", m)
			}
		})
	}
}

// A plaintext server that offers AUTH never sees the credentials: the
// client stops before AUTH.
func TestAuthNeverInPlaintext(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	addr := scripted(t, func(c net.Conn, r *bufio.Reader) {
		c.Write([]byte("220 relay.test ESMTP\r\n"))
		for {
			cmd, err := readCmd(r)
			if err != nil {
				return
			}
			mu.Lock()
			seen = append(seen, cmd)
			mu.Unlock()
			switch {
			case strings.HasPrefix(cmd, "EHLO"):
				c.Write([]byte("250-relay.test\r\n250 AUTH PLAIN LOGIN\r\n"))
			case cmd == "QUIT":
				c.Write([]byte("221 bye\r\n"))
				return
			default:
				c.Write([]byte("502 no\r\n"))
			}
		}
	})
	d := dialer("out.sender.test")
	d.Auth = smtpclient.PasswordAuth("relay-user", "s3cret")
	_, err := d.Dial(t.Context(), addr, "relay.test")
	if !errors.Is(err, smtpclient.ErrAuthNeedsTLS) {
		t.Fatalf("Dial error %v, want ErrAuthNeedsTLS", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, cmd := range seen {
		if strings.HasPrefix(cmd, "AUTH") {
			t.Errorf("client said %q in plaintext", cmd)
		}
	}
}

// Implicit TLS (RFC 8314, port 465): the handshake comes before the
// greeting, AUTH follows.
func TestImplicitTLS(t *testing.T) {
	cert, pool := selfSigned(t, "relay.test")
	be := &authBackend{backend: newBackend(), user: "relay-user", pass: "s3cret", mechs: []string{"PLAIN"}}
	s := smtp.NewServer(be)
	s.Domain = "relay.test"
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(l) }()
	t.Cleanup(func() { s.Close(); <-done })

	d := dialer("out.sender.test")
	d.ImplicitTLS, d.RequireVerifiedTLS = true, true
	d.TLSConfig = &tls.Config{RootCAs: pool}
	d.Auth = smtpclient.PasswordAuth("relay-user", "s3cret")
	c, err := d.Dial(t.Context(), l.Addr().String(), "relay.test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if used, verified := c.TLS(); !used || !verified {
		t.Fatalf("TLS() = %v, %v", used, verified)
	}
	if _, err := c.Send(t.Context(), "a@sender.test", []string{"b@dest.test"}, message(300), smtpclient.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := be.loginsSeen(); len(got) != 1 {
		t.Errorf("logins %v", got)
	}

	// A plaintext server on the implicit-TLS port fails the handshake;
	// nothing falls back to plaintext.
	plain := startServer(t, "127.0.0.1", newBackend(), nil)
	d2 := dialer("out.sender.test")
	d2.ImplicitTLS = true
	if _, err := d2.Dial(t.Context(), plain, "relay.test"); !errors.Is(err, smtpclient.ErrTLSRequired) {
		t.Fatalf("implicit TLS to a plaintext server: %v, want ErrTLSRequired", err)
	}
}
