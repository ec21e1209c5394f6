package ispsim

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// ErrUnknownZone is returned by the blocklist methods of Zone for a zone
// that the profile does not declare.
var ErrUnknownZone = errors.New("ispsim: unknown blocklist zone")

// ErrBadRecord is returned by Zone.AddRR for text that is not a resource
// record.
var ErrBadRecord = errors.New("ispsim: bad resource record")

// Zone is the simulator's authoritative DNS data and its server, on one
// loopback port over UDP and TCP. Every method is safe for concurrent use
// and takes effect for the next query.
type Zone struct {
	ttl uint32
	log *slog.Logger

	mu         sync.RWMutex
	records    map[string]map[uint16][]dns.RR // canonical name → type → RRs
	rcodes     map[string]int
	blocklists map[string]*blocklist // canonical zone → list

	addr    string
	servers []*dns.Server
}

type blocklist struct {
	zone    string // canonical
	kind    string // "ip" or "domain"
	text    string
	refused string
	entries map[string]listing // query prefix (reversed IP or domain) → listing
}

type listing struct {
	key  string // the listed IP or domain as given
	code string
}

// MX is one mail exchanger of a domain.
type MX struct {
	Pref uint16
	Host string
}

func newZone(cfg DNSConfig, log *slog.Logger) (*Zone, error) {
	z := &Zone{
		ttl:        cfg.TTL,
		log:        log,
		records:    map[string]map[uint16][]dns.RR{},
		rcodes:     map[string]int{},
		blocklists: map[string]*blocklist{},
	}
	for _, r := range cfg.Records {
		if err := z.AddRR(r); err != nil {
			return nil, err
		}
	}
	for name, rc := range cfg.Rcodes {
		code, err := parseRcode(rc)
		if err != nil {
			return nil, err
		}
		z.SetRcode(name, code)
	}
	for _, bl := range cfg.Blocklists {
		b := &blocklist{zone: canonical(bl.Zone), kind: bl.Kind, text: bl.Text, refused: bl.Refused, entries: map[string]listing{}}
		z.blocklists[b.zone] = b
		for k, code := range bl.Listings {
			var err error
			if bl.Kind == "ip" {
				err = z.ListIP(bl.Zone, netip.MustParseAddr(k), code)
			} else {
				err = z.ListDomain(bl.Zone, k, code)
			}
			if err != nil {
				return nil, err
			}
		}
	}
	return z, nil
}

// listen binds UDP and TCP on the same port of addr (port 0 picks one),
// retrying when the TCP port happens to be taken.
func (z *Zone) listen(addr string) error {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return fmt.Errorf("ispsim: dns listen: %w", err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		host, _, _ := net.SplitHostPort(addr)
		l, err := net.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(port)))
		if err != nil {
			pc.Close()
			lastErr = err
			if strings.HasSuffix(addr, ":0") {
				continue
			}
			break
		}
		z.addr = net.JoinHostPort(host, fmt.Sprint(port))
		udp := &dns.Server{PacketConn: pc, Handler: z}
		tcp := &dns.Server{Listener: l, Handler: z}
		z.servers = []*dns.Server{udp, tcp}
		for _, s := range z.servers {
			go func() {
				if err := s.ActivateAndServe(); err != nil {
					z.log.Debug("dns server stopped", "err", err)
				}
			}()
		}
		return nil
	}
	return fmt.Errorf("ispsim: dns listen: %w", lastErr)
}

func (z *Zone) close() {
	for _, s := range z.servers {
		s.Shutdown()
	}
}

// Addr is the server's "127.0.0.1:port", for UDP and TCP alike.
func (z *Zone) Addr() string { return z.addr }

// AddRR adds one record in zone-file syntax ("example.com. TXT \"v=spf1 -all\"").
func (z *Zone) AddRR(s string) error {
	rr, err := dns.NewRR(s)
	if err != nil || rr == nil {
		return fmt.Errorf("%w: %q: %v", ErrBadRecord, s, err)
	}
	z.add(rr)
	return nil
}

func (z *Zone) add(rrs ...dns.RR) {
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, rr := range rrs {
		h := rr.Header()
		h.Name = canonical(h.Name)
		if h.Ttl == 0 || h.Ttl == 3600 { // 3600 is dns.NewRR's default
			h.Ttl = z.ttl
		}
		byType := z.records[h.Name]
		if byType == nil {
			byType = map[uint16][]dns.RR{}
			z.records[h.Name] = byType
		}
		byType[h.Rrtype] = append(byType[h.Rrtype], rr)
	}
}

func (z *Zone) replace(name string, t uint16, rrs ...dns.RR) {
	name = canonical(name)
	z.mu.Lock()
	if byType := z.records[name]; byType != nil {
		delete(byType, t)
	}
	z.mu.Unlock()
	z.add(rrs...)
}

func (z *Zone) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: canonical(name), Rrtype: t, Class: dns.ClassINET, Ttl: z.ttl}
}

// SetMX replaces the MX records of domain.
func (z *Zone) SetMX(domain string, mx ...MX) {
	rrs := make([]dns.RR, 0, len(mx))
	for _, m := range mx {
		rrs = append(rrs, &dns.MX{Hdr: z.hdr(domain, dns.TypeMX), Preference: m.Pref, Mx: canonical(m.Host)})
	}
	z.replace(domain, dns.TypeMX, rrs...)
}

// SetNullMX publishes the RFC 7505 null MX ("MX 0 .") for domain: it
// accepts no mail.
func (z *Zone) SetNullMX(domain string) {
	z.replace(domain, dns.TypeMX, &dns.MX{Hdr: z.hdr(domain, dns.TypeMX), Preference: 0, Mx: "."})
}

// SetA replaces the A and AAAA records of name with addrs.
func (z *Zone) SetA(name string, addrs ...netip.Addr) {
	var a, aaaa []dns.RR
	for _, ip := range addrs {
		if ip.Is4() {
			a = append(a, &dns.A{Hdr: z.hdr(name, dns.TypeA), A: net.IP(ip.AsSlice())})
		} else {
			aaaa = append(aaaa, &dns.AAAA{Hdr: z.hdr(name, dns.TypeAAAA), AAAA: net.IP(ip.AsSlice())})
		}
	}
	z.replace(name, dns.TypeA, a...)
	z.replace(name, dns.TypeAAAA, aaaa...)
}

// SetTXT replaces the TXT records of name, one record per string. Strings
// longer than 255 bytes (DKIM keys) are split into character-strings
// (RFC 7208 §3.3), which resolvers join again.
func (z *Zone) SetTXT(name string, txt ...string) {
	rrs := make([]dns.RR, 0, len(txt))
	for _, t := range txt {
		rrs = append(rrs, &dns.TXT{Hdr: z.hdr(name, dns.TypeTXT), Txt: splitTXT(t)})
	}
	z.replace(name, dns.TypeTXT, rrs...)
}

func splitTXT(s string) []string {
	var out []string
	for len(s) > 255 {
		out = append(out, s[:255])
		s = s[255:]
	}
	return append(out, s)
}

// SetPTR replaces the PTR record of ip's reverse name (RFC 1035 §3.5).
func (z *Zone) SetPTR(ip netip.Addr, name string) {
	rev, _ := dns.ReverseAddr(ip.String())
	z.replace(rev, dns.TypePTR, &dns.PTR{Hdr: z.hdr(rev, dns.TypePTR), Ptr: canonical(name)})
}

// SetCNAME makes name an alias of target.
func (z *Zone) SetCNAME(name, target string) {
	z.replace(name, dns.TypeCNAME, &dns.CNAME{Hdr: z.hdr(name, dns.TypeCNAME), Target: canonical(target)})
}

// Remove deletes name's records of the given types (dns.TypeMX, ...), or
// all of them when no type is given. A name left with no records answers
// NXDOMAIN.
func (z *Zone) Remove(name string, types ...uint16) {
	name = canonical(name)
	z.mu.Lock()
	defer z.mu.Unlock()
	if len(types) == 0 {
		delete(z.records, name)
		return
	}
	for _, t := range types {
		delete(z.records[name], t)
	}
	if len(z.records[name]) == 0 {
		delete(z.records, name)
	}
}

// SetRcode forces every answer for name to carry rcode
// (dns.RcodeNameError, dns.RcodeServerFailure, dns.RcodeRefused), whatever
// its records; dns.RcodeSuccess removes the override.
func (z *Zone) SetRcode(name string, rcode int) {
	name = canonical(name)
	z.mu.Lock()
	defer z.mu.Unlock()
	if rcode == dns.RcodeSuccess {
		delete(z.rcodes, name)
		return
	}
	z.rcodes[name] = rcode
}

// SetNXDomain makes name answer NXDOMAIN even if it has records.
func (z *Zone) SetNXDomain(name string) { z.SetRcode(name, dns.RcodeNameError) }

func (z *Zone) list(zone string) (*blocklist, error) {
	b := z.blocklists[canonical(zone)]
	if b == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownZone, zone)
	}
	return b, nil
}

// ipPrefix is the query name of ip under a DNSBL zone, without the zone:
// reversed octets for IPv4, reversed nibbles for IPv6 (RFC 5782 §2.1, §2.4).
func ipPrefix(ip netip.Addr) string {
	rev, _ := dns.ReverseAddr(ip.Unmap().String())
	rev = strings.TrimSuffix(rev, ".in-addr.arpa.")
	return strings.TrimSuffix(rev, ".ip6.arpa.")
}

// ListIP lists ip in the IP blocklist zone with answer code ("" means
// 127.0.0.2). It returns ErrUnknownZone for an undeclared zone.
func (z *Zone) ListIP(zone string, ip netip.Addr, code string) error {
	if code == "" {
		code = "127.0.0.2"
	}
	if err := checkCode(code); err != nil {
		return fmt.Errorf("ispsim: list %s: %w", ip, err)
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	b, err := z.list(zone)
	if err != nil {
		return err
	}
	if b.kind != "ip" {
		return fmt.Errorf("%w: %s lists domains, not IPs", ErrUnknownZone, zone)
	}
	b.entries[ipPrefix(ip)] = listing{key: ip.Unmap().String(), code: code}
	return nil
}

// ListDomain lists domain in the domain blocklist zone with answer code
// ("" means 127.0.1.2).
func (z *Zone) ListDomain(zone, domain, code string) error {
	if code == "" {
		code = "127.0.1.2"
	}
	if err := checkCode(code); err != nil {
		return fmt.Errorf("ispsim: list %s: %w", domain, err)
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	b, err := z.list(zone)
	if err != nil {
		return err
	}
	if b.kind != "domain" {
		return fmt.Errorf("%w: %s lists IPs, not domains", ErrUnknownZone, zone)
	}
	d := strings.TrimSuffix(canonical(domain), ".")
	b.entries[d] = listing{key: d, code: code}
	return nil
}

// Delist removes an IP or domain (as given to ListIP or ListDomain) from
// zone.
func (z *Zone) Delist(zone, key string) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	b, err := z.list(zone)
	if err != nil {
		return err
	}
	if ip, err := netip.ParseAddr(key); err == nil && b.kind == "ip" {
		delete(b.entries, ipPrefix(ip))
		return nil
	}
	delete(b.entries, strings.TrimSuffix(canonical(key), "."))
	return nil
}

// SetRefused makes zone answer every query with code, the "query refused"
// answers real lists give (127.255.255.254 to public resolvers,
// 127.255.255.255 over quota); "" restores real answers.
func (z *Zone) SetRefused(zone, code string) error {
	if code != "" {
		if err := checkCode(code); err != nil {
			return fmt.Errorf("ispsim: refuse %s: %w", zone, err)
		}
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	b, err := z.list(zone)
	if err != nil {
		return err
	}
	b.refused = code
	return nil
}

// Listed reports the answer code for ip in an IP blocklist zone.
func (z *Zone) Listed(zone string, ip netip.Addr) (code string, ok bool) {
	z.mu.RLock()
	defer z.mu.RUnlock()
	b := z.blocklists[canonical(zone)]
	if b == nil || b.kind != "ip" || b.refused != "" {
		return "", false
	}
	l, ok := b.entries[ipPrefix(ip)]
	return l.code, ok
}

// mx returns domain's MX hosts ordered by preference, or the rcode that
// a query would get.
func (z *Zone) mx(domain string) ([]MX, int) {
	z.mu.RLock()
	defer z.mu.RUnlock()
	name := canonical(domain)
	if rc, ok := z.rcodes[name]; ok {
		return nil, rc
	}
	var out []MX
	for _, rr := range z.records[name][dns.TypeMX] {
		m := rr.(*dns.MX)
		out = append(out, MX{Pref: m.Preference, Host: m.Mx})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Pref < out[j].Pref })
	if len(out) == 0 && z.records[name] == nil {
		return nil, dns.RcodeNameError
	}
	return out, dns.RcodeSuccess
}

// addrs returns host's IPv4 and IPv6 addresses.
func (z *Zone) addrs(host string) []netip.Addr {
	z.mu.RLock()
	defer z.mu.RUnlock()
	name := canonical(host)
	if _, ok := z.rcodes[name]; ok {
		return nil
	}
	var out []netip.Addr
	for _, rr := range z.records[name][dns.TypeA] {
		a, _ := netip.AddrFromSlice(rr.(*dns.A).A.To4())
		out = append(out, a)
	}
	for _, rr := range z.records[name][dns.TypeAAAA] {
		a, _ := netip.AddrFromSlice(rr.(*dns.AAAA).AAAA)
		out = append(out, a)
	}
	return out
}

// ServeDNS answers one query (RFC 1034 §4.3.2, without delegation: the
// server is authoritative for every name it has).
func (z *Zone) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	// Go's resolver treats an empty answer without RA or AA as a lame
	// referral; say both.
	m.RecursionAvailable = true
	if len(req.Question) == 1 {
		z.answer(m, req.Question[0])
	} else {
		m.Rcode = dns.RcodeFormatError
	}
	if err := w.WriteMsg(m); err != nil {
		z.log.Debug("dns write", "err", err)
	}
}

func (z *Zone) answer(m *dns.Msg, q dns.Question) {
	z.mu.RLock()
	defer z.mu.RUnlock()
	name := strings.ToLower(q.Name)
	if rc, ok := z.rcodes[name]; ok {
		m.Rcode = rc
		return
	}
	if b := z.blocklistFor(name); b != nil {
		z.answerList(m, q, b, name)
		return
	}
	for range 8 { // CNAME chains, bounded
		byType := z.records[name]
		if byType == nil {
			if len(m.Answer) == 0 && !z.hasDescendant(name) {
				m.Rcode = dns.RcodeNameError
			}
			return
		}
		if rrs := byType[q.Qtype]; len(rrs) > 0 {
			m.Answer = append(m.Answer, copyRRs(rrs)...)
			return
		}
		cn := byType[dns.TypeCNAME]
		if len(cn) == 0 || q.Qtype == dns.TypeCNAME {
			return // NODATA
		}
		m.Answer = append(m.Answer, dns.Copy(cn[0]))
		name = cn[0].(*dns.CNAME).Target
		if _, ok := z.rcodes[name]; ok {
			return
		}
	}
}

func copyRRs(rrs []dns.RR) []dns.RR {
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		out[i] = dns.Copy(rr)
	}
	return out
}

// hasDescendant reports whether name is an empty non-terminal, which
// answers NODATA rather than NXDOMAIN (RFC 8020).
func (z *Zone) hasDescendant(name string) bool {
	suffix := "." + name
	for n := range z.records {
		if strings.HasSuffix(n, suffix) {
			return true
		}
	}
	return false
}

func (z *Zone) blocklistFor(name string) *blocklist {
	for zone, b := range z.blocklists {
		if name == zone || strings.HasSuffix(name, "."+zone) {
			return b
		}
	}
	return nil
}

func (z *Zone) answerList(m *dns.Msg, q dns.Question, b *blocklist, name string) {
	if name == b.zone {
		return // the apex exists and has nothing to say
	}
	prefix := strings.TrimSuffix(name, "."+b.zone)
	code, text := "", ""
	if b.refused != "" {
		code, text = b.refused, "Query refused"
	} else if l, ok := b.entries[prefix]; ok {
		code = l.code
		text = strings.NewReplacer("{key}", l.key, "{code}", l.code).Replace(b.text)
	} else {
		m.Rcode = dns.RcodeNameError
		return
	}
	switch q.Qtype {
	case dns.TypeA:
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: z.ttl}, A: net.ParseIP(code).To4()})
	case dns.TypeTXT:
		if text != "" {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: z.ttl}, Txt: splitTXT(text)})
		}
	}
}
