package e2e_test

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"

	"github.com/mailwave/mailwave/pkg/ispsim"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/sender/sender"
	"github.com/mailwave/mailwave/tools/stack"
)

// egressProxy is a small SOCKS5 server (RFC 1928, CONNECT only, with RFC
// 1929 username/password) that owns an egress address: it connects out
// from egress, as the proxy beside a dedicated IP does in a cluster. It
// records each CONNECT target and the user that asked.
type egressProxy struct {
	user, pass string
	egress     netip.Addr

	mu      sync.Mutex
	targets []string
	users   []string
}

func (p *egressProxy) start(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		open = append(open, c)
		mu.Unlock()
	}
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			track(c)
			wg.Go(func() { p.serve(c, track) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

func (p *egressProxy) serve(c net.Conn, track func(net.Conn)) {
	defer c.Close()
	r := bufio.NewReader(c)
	// Greeting: version 5, the methods offered; we want 2
	// (username/password).
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil || hdr[0] != 5 {
		return
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return
	}
	found := false
	for _, m := range methods {
		found = found || m == 2
	}
	if !found {
		c.Write([]byte{5, 0xff})
		return
	}
	c.Write([]byte{5, 2})
	// RFC 1929: version 1, user, password.
	var v [2]byte
	if _, err := io.ReadFull(r, v[:]); err != nil || v[0] != 1 {
		return
	}
	user := make([]byte, v[1])
	if _, err := io.ReadFull(r, user); err != nil {
		return
	}
	plen, err := r.ReadByte()
	if err != nil {
		return
	}
	pass := make([]byte, plen)
	if _, err := io.ReadFull(r, pass); err != nil {
		return
	}
	if string(user) != p.user || string(pass) != p.pass {
		c.Write([]byte{1, 1})
		return
	}
	c.Write([]byte{1, 0})
	// Request: version, CONNECT, reserved, address type, address, port.
	var req [4]byte
	if _, err := io.ReadFull(r, req[:]); err != nil || req[1] != 1 {
		return
	}
	var host string
	switch req[3] {
	case 1:
		var a [4]byte
		if _, err := io.ReadFull(r, a[:]); err != nil {
			return
		}
		host = netip.AddrFrom4(a).String()
	case 3:
		n, err := r.ReadByte()
		if err != nil {
			return
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return
		}
		host = string(b)
	default:
		c.Write([]byte{5, 8, 0, 1, 0, 0, 0, 0, 0, 0})
		return
	}
	var port [2]byte
	if _, err := io.ReadFull(r, port[:]); err != nil {
		return
	}
	target := net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(port[:]))))
	p.mu.Lock()
	p.targets = append(p.targets, target)
	p.users = append(p.users, string(user))
	p.mu.Unlock()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: p.egress.AsSlice()}}
	out, err := d.Dial("tcp", target)
	if err != nil {
		c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0})
		return
	}
	track(out)
	defer out.Close()
	c.Write([]byte{5, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	go func() { _, _ = io.Copy(out, r); out.Close() }()
	_, _ = io.Copy(c, out)
}

func (p *egressProxy) seen() (targets, users []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.targets...), append([]string(nil), p.users...)
}

// A source IP configured with a SOCKS5 proxy leaves through it: the
// proxy is asked to CONNECT to the provider's MX, and the provider sees
// the proxy's egress address with the EHLO name of that source.
func TestSOCKSEgressPerSourceIP(t *testing.T) {
	proxy := &egressProxy{user: "mailwave", pass: "socks-s3cret", egress: netip.MustParseAddr("127.0.0.3")}
	proxyAddr := proxy.start(t)
	e := startWith(t, nil, func(o *stack.Options) {
		o.TuneSender = func(c *sender.Config) {
			c.SOCKSProxies = []string{"127.0.0.3=" + proxyAddr}
			c.SOCKSUsername, c.SOCKSPassword = "mailwave", "socks-s3cret"
		}
	})
	ctx := testenv.Context(t)
	if _, err := e.cl.Send(ctx, &mailwavev1.SendRequest{IdempotencyKey: "socks-1", Tenant: "acme", Brand: "shop",
		Recipients: recipients("ida@gmail.com", "jo@yahoo.com"), Content: template("Shop <news@mailwave.test>")}); err != nil {
		t.Fatal(err)
	}
	for rcpt, ev := range e.terminal(t, "acme", "socks-1", 2) {
		if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED || ev.GetSourceIp() != "127.0.0.3" {
			t.Errorf("%s: %v from %s: %s", rcpt, ev.GetKind(), ev.GetSourceIp(), ev.GetResponse())
		}
	}
	snap, err := e.sim.Ledger().Wait(ctx, func(s *ispsim.Snapshot) bool { return len(s.Messages) == 2 })
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range snap.Messages {
		if m.SourceIP.String() != "127.0.0.3" || m.EHLO != "mta2.mailwave.test" {
			t.Errorf("%v arrived from %s as %q", m.Rcpts, m.SourceIP, m.EHLO)
		}
	}
	targets, users := proxy.seen()
	port := strconv.Itoa(e.sim.SMTPPort())
	want := map[string]bool{net.JoinHostPort("127.0.0.10", port): true, net.JoinHostPort("127.0.0.11", port): true}
	conns := snap.Counter("google", mustAddr("127.0.0.3")).Connections + snap.Counter("yahoo", mustAddr("127.0.0.3")).Connections
	if len(targets) != conns {
		t.Errorf("the proxy carried %d connections, the providers saw %d: some bypassed the proxy", len(targets), conns)
	}
	for i, tg := range targets {
		if !want[tg] || users[i] != "mailwave" {
			t.Errorf("CONNECT %s as %q", tg, users[i])
		}
		delete(want, tg)
	}
	if len(want) != 0 {
		t.Errorf("no CONNECT to %v", want)
	}
}
