package mx_test

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// zone is a hand-written DNS server that answers like a recursive
// resolver would for the records it holds: CNAME chains followed,
// NXDOMAIN and no-data answers with an SOA whose minimum is 30 s.
type zone struct {
	mu       sync.Mutex
	rrs      map[string][]dns.RR // by lower-case FQDN
	servfail map[string]bool
	drop     map[string]bool // never answered
	truncate map[string]bool // truncated over UDP, whole over TCP
	hold     chan struct{}   // when set, queries wait for it to close
	arrived  chan struct{}   // told, without blocking, of each held query
	queries  map[string]int  // "TYPE name." → count
	tcp      int
}

const soa = "test. 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 30"

func newZone(t testing.TB, records ...string) (*zone, string) {
	t.Helper()
	z := &zone{rrs: map[string][]dns.RR{}, servfail: map[string]bool{}, drop: map[string]bool{},
		truncate: map[string]bool{}, queries: map[string]int{}}
	z.add(t, records...)
	return z, z.serve(t)
}

func (z *zone) add(t testing.TB, records ...string) {
	t.Helper()
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("record %q: %v", s, err)
		}
		name := strings.ToLower(rr.Header().Name)
		z.rrs[name] = append(z.rrs[name], rr)
	}
}

func (z *zone) count(qtype, name string) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.queries[qtype+" "+dns.Fqdn(name)]
}

func (z *zone) serve(t testing.TB) string {
	t.Helper()
	var pc net.PacketConn
	var l net.Listener
	// UDP and TCP on one port; retry if another process took the TCP one.
	for range 10 {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		pc = nil
	}
	if pc == nil {
		t.Fatal("no port free for udp and tcp")
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: z}, {Listener: l, Handler: z}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ActivateAndServe()
		}()
		<-started
		t.Cleanup(func() {
			srv.Shutdown()
			<-done
		})
	}
	return pc.LocalAddr().String()
}

func (z *zone) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	_, overTCP := w.RemoteAddr().(*net.TCPAddr)
	z.mu.Lock()
	z.queries[dns.TypeToString[q.Qtype]+" "+name]++
	if overTCP {
		z.tcp++
	}
	hold, arrived, servfail, drop, truncate := z.hold, z.arrived, z.servfail[name], z.drop[name], z.truncate[name]
	z.mu.Unlock()
	if hold != nil {
		select {
		case arrived <- struct{}{}:
		default:
		}
		<-hold
	}
	if drop {
		return
	}
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.RecursionAvailable = true
	switch {
	case servfail:
		resp.Rcode = dns.RcodeServerFailure
	case truncate && !overTCP:
		resp.Truncated = true
	default:
		z.answer(resp, name, q.Qtype)
	}
	w.WriteMsg(resp)
}

func (z *zone) answer(resp *dns.Msg, name string, qtype uint16) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if _, ok := z.rrs[name]; !ok {
		resp.Rcode = dns.RcodeNameError
		resp.Ns = append(resp.Ns, mustRR(soa))
		return
	}
	for range 8 {
		var cname *dns.CNAME
		for _, rr := range z.rrs[name] {
			switch {
			case rr.Header().Rrtype == qtype:
				resp.Answer = append(resp.Answer, rr)
			case rr.Header().Rrtype == dns.TypeCNAME:
				cname = rr.(*dns.CNAME)
			}
		}
		if cname == nil || qtype == dns.TypeCNAME {
			break
		}
		resp.Answer = append(resp.Answer, cname)
		name = strings.ToLower(cname.Target)
	}
	if len(resp.Answer) == 0 {
		resp.Ns = append(resp.Ns, mustRR(soa))
	}
}

func mustRR(s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return rr
}

// clock is a fake clock for cache expiry.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
