package smtpclient_test

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mailwave/mailwave/pkg/smtpclient"
)

// socksServer is a minimal RFC 1928 proxy (CONNECT only, with optional
// RFC 1929 username/password) that records where it connected.
type socksServer struct {
	user, pass string
	mu         sync.Mutex
	targets    []string
}

func (s *socksServer) start(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return l.Addr().String()
}

func (s *socksServer) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(r, hdr); err != nil || hdr[0] != 5 {
		return
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return
	}
	want := byte(0)
	if s.user != "" {
		want = 2
	}
	found := false
	for _, m := range methods {
		found = found || m == want
	}
	if !found {
		c.Write([]byte{5, 0xff})
		return
	}
	c.Write([]byte{5, want})
	if want == 2 {
		user, pass, err := readUserPass(r)
		if err != nil {
			return
		}
		if user != s.user || pass != s.pass {
			c.Write([]byte{1, 1})
			return
		}
		c.Write([]byte{1, 0})
	}
	req := make([]byte, 4)
	if _, err := io.ReadFull(r, req); err != nil || req[1] != 1 {
		return
	}
	var host string
	switch req[3] {
	case 1:
		ip := make([]byte, 4)
		io.ReadFull(r, ip)
		host = net.IP(ip).String()
	case 3:
		n, _ := r.ReadByte()
		name := make([]byte, n)
		io.ReadFull(r, name)
		host = string(name)
	case 4:
		ip := make([]byte, 16)
		io.ReadFull(r, ip)
		host = net.IP(ip).String()
	default:
		return
	}
	pb := make([]byte, 2)
	if _, err := io.ReadFull(r, pb); err != nil {
		return
	}
	target := net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(pb))))
	s.mu.Lock()
	s.targets = append(s.targets, target)
	s.mu.Unlock()
	up, err := net.Dial("tcp", target)
	if err != nil {
		c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0})
		return
	}
	defer up.Close()
	la := up.LocalAddr().(*net.TCPAddr)
	reply := append([]byte{5, 0, 0, 1}, la.IP.To4()...)
	reply = binary.BigEndian.AppendUint16(reply, uint16(la.Port))
	c.Write(reply)
	done := make(chan struct{})
	go func() {
		io.Copy(c, up)
		c.Close()
		close(done)
	}()
	io.Copy(up, r)
	up.Close()
	<-done
}

func readUserPass(r *bufio.Reader) (string, string, error) {
	ver, err := r.ReadByte()
	if err != nil || ver != 1 {
		return "", "", errors.New("bad auth version")
	}
	read := func() (string, error) {
		n, err := r.ReadByte()
		if err != nil {
			return "", err
		}
		b := make([]byte, n)
		_, err = io.ReadFull(r, b)
		return string(b), err
	}
	user, err := read()
	if err != nil {
		return "", "", err
	}
	pass, err := read()
	return user, pass, err
}

func TestSOCKS5Egress(t *testing.T) {
	be := newBackend()
	addr := startServer(t, "127.0.0.1", be, nil)
	tests := []struct {
		name    string
		server  *socksServer
		url     func(proxy string) string
		wantErr bool
	}{
		{"no auth", &socksServer{}, func(p string) string { return p }, false},
		{"password", &socksServer{user: "pool-a", pass: "s3cret"}, func(p string) string { return "socks5://pool-a:s3cret@" + p }, false},
		{"wrong password", &socksServer{user: "pool-a", pass: "s3cret"}, func(p string) string { return "socks5://pool-a:nope@" + p }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			proxyAddr := tc.server.start(t)
			d := dialer("egress.sender.test")
			d.SOCKS5 = tc.url(proxyAddr)
			c, err := d.Dial(t.Context(), addr, "mx.test")
			if tc.wantErr {
				if e := asError(t, err); e.Phase != smtpclient.PhaseConnect || !e.Temporary() {
					t.Errorf("error %+v", e)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			res, err := c.Send(t.Context(), "a@sender.test", []string{strings.ReplaceAll(tc.name, " ", "-") + "@dest.test"}, message(300), smtpclient.SendOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.RemoteAddr != addr {
				t.Errorf("remote %s, want %s", res.RemoteAddr, addr)
			}
			if err := c.Quit(t.Context()); err != nil {
				t.Fatal(err)
			}
			tc.server.mu.Lock()
			defer tc.server.mu.Unlock()
			if len(tc.server.targets) != 1 || tc.server.targets[0] != addr {
				t.Errorf("proxy connected to %v", tc.server.targets)
			}
		})
	}
	if _, err := (&smtpclient.Dialer{HelloName: "x", SOCKS5: "http://proxy:1"}).Dial(t.Context(), addr, "mx.test"); !errors.Is(err, smtpclient.ErrInvalidDialer) {
		t.Errorf("bad proxy URL: %v", err)
	}
}
