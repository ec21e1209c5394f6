package ispsim

import (
	"fmt"
	"math/rand"
	"net/netip"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Provider is one simulated mailbox provider at run time. Its setters
// change behaviour for the next command of every open session.
type Provider struct {
	sim      *Sim
	name     string
	addr     netip.Addr
	hostname string
	domains  map[string]bool // lower case, no trailing dot
	srv      *smtp.Server
	gate     *gate

	mu         sync.Mutex
	limits     Limits
	grey       GreylistConfig
	rules      []RecipientRule
	replies    Replies
	outage     Outage
	slow       SlowConfig
	blocked    map[netip.Addr]block
	dnsbl      []string
	autoblock  AutoBlockConfig
	complaints ComplaintConfig
	rng        *rand.Rand
	nth        int
	dsnDelay   time.Duration

	active     map[netip.Addr]int
	sent       map[netip.Addr][]time.Time // accepted transactions, for the rate window
	triplets   map[triplet]*greyEntry
	bounceLog  map[netip.Addr][]time.Time
	complainLg map[netip.Addr][]time.Time
}

type block struct {
	until  time.Time // zero: until Unblock
	reason string
}

type triplet struct {
	ip       netip.Addr
	from, to string
}

type greyEntry struct {
	first  time.Time
	passed time.Time // zero until a retry passed
}

func newProvider(s *Sim, pc ProviderConfig) *Provider {
	p := &Provider{
		sim:        s,
		name:       pc.Name,
		addr:       netip.MustParseAddr(pc.Address),
		hostname:   pc.Hostname,
		domains:    map[string]bool{},
		limits:     pc.Limits,
		grey:       pc.Greylist,
		rules:      append([]RecipientRule(nil), pc.Rules...),
		replies:    pc.Replies,
		outage:     pc.Outage,
		slow:       pc.Slow,
		blocked:    map[netip.Addr]block{},
		dnsbl:      append([]string(nil), pc.DNSBL...),
		autoblock:  pc.AutoBlock,
		complaints: pc.Complaints,
		rng:        rand.New(rand.NewSource(pc.Complaints.Seed)),
		dsnDelay:   pc.DSN.Delay,
		active:     map[netip.Addr]int{},
		sent:       map[netip.Addr][]time.Time{},
		triplets:   map[triplet]*greyEntry{},
		bounceLog:  map[netip.Addr][]time.Time{},
		complainLg: map[netip.Addr][]time.Time{},
	}
	for _, d := range pc.Domains {
		p.domains[strings.TrimSuffix(canonical(d.Name), ".")] = true
	}
	for _, b := range pc.Blocked {
		p.blocked[netip.MustParseAddr(b)] = block{reason: "listed by the profile"}
	}
	return p
}

// Name is the provider's name in the profile.
func (p *Provider) Name() string { return p.name }

// Addr is the loopback address the provider listens on.
func (p *Provider) Addr() netip.Addr { return p.addr }

// Hostname is the name in the provider's greeting and reports.
func (p *Provider) Hostname() string { return p.hostname }

// Domains lists the recipient domains the provider serves.
func (p *Provider) Domains() []string {
	out := make([]string, 0, len(p.domains))
	for d := range p.domains {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// Serves reports whether the provider accepts mail for domain.
func (p *Provider) Serves(domain string) bool {
	return p.domains[strings.TrimSuffix(strings.ToLower(domain), ".")]
}

// Block refuses mail from ip (the "blocked" reply, 5xx at MAIL) until
// Unblock; reason fills the reply's {reason}.
func (p *Provider) Block(ip netip.Addr, reason string) { p.BlockFor(ip, 0, reason) }

// BlockFor refuses mail from ip for d on the simulator's clock (0: until
// Unblock).
func (p *Provider) BlockFor(ip netip.Addr, d time.Duration, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := block{reason: reason}
	if d > 0 {
		b.until = p.sim.clock.Now().Add(d)
	}
	p.blocked[ip.Unmap()] = b
}

// Unblock lifts a block of ip.
func (p *Provider) Unblock(ip netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.blocked, ip.Unmap())
}

// Blocked reports whether ip is blocked (by Block, the profile or an
// autoblock; DNSBL listings are not included) and why.
func (p *Provider) Blocked(ip netip.Addr) (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blockedLocked(ip.Unmap(), p.sim.clock.Now())
}

func (p *Provider) blockedLocked(ip netip.Addr, now time.Time) (bool, string) {
	b, ok := p.blocked[ip]
	if !ok {
		return false, ""
	}
	if !b.until.IsZero() && !now.Before(b.until) {
		delete(p.blocked, ip)
		return false, ""
	}
	return true, b.reason
}

// SetOutage switches the failure mode (OutageNone ends an outage).
func (p *Provider) SetOutage(o Outage) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.outage = o
}

// SetRate accepts at most n transactions per source IP within any window
// of length per; n = 0 removes the limit.
func (p *Provider) SetRate(n int, per time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.limits.Rate, p.limits.Per = n, per
}

// SetMaxConnections caps concurrent connections per source IP (0: none).
func (p *Provider) SetMaxConnections(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.limits.MaxConnections = n
}

// SetMaxMessagesPerConnection caps transactions per session (0: none).
func (p *Provider) SetMaxMessagesPerConnection(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.limits.MaxMessagesPerConnection = n
}

// SetGreylist replaces the greylisting settings. Known triplets are kept.
func (p *Provider) SetGreylist(g GreylistConfig) error {
	if g.Window < g.Delay {
		return fmt.Errorf("%w: greylist window shorter than delay", ErrInvalidProfile)
	}
	if g.TTL == 0 {
		g.TTL = 36 * 24 * time.Hour
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.grey = g
	return nil
}

// AddRule puts r before the existing recipient rules.
func (p *Provider) AddRule(r RecipientRule) error {
	if err := r.validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidProfile, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append([]RecipientRule{r}, p.rules...)
	return nil
}

// SetRules replaces the recipient rules.
func (p *Provider) SetRules(rules []RecipientRule) error {
	for _, r := range rules {
		if err := r.validate(); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidProfile, err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append([]RecipientRule(nil), rules...)
	return nil
}

// SetSlow delays the greeting and command replies in real time.
func (p *Provider) SetSlow(s SlowConfig) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.slow = s
}

// SetComplaints replaces the complaint settings; the RNG restarts from
// the new seed.
func (p *Provider) SetComplaints(c ComplaintConfig) error {
	users := map[string]bool{}
	for _, u := range p.sim.profile.IMAP.Users {
		users[u.Username] = true
	}
	if err := c.normalize(users); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidProfile, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.complaints = c
	p.rng = rand.New(rand.NewSource(c.Seed))
	p.nth = 0
	return nil
}

// SetDNSBL replaces the blocklist zones the provider consults.
func (p *Provider) SetDNSBL(zones ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dnsbl = append([]string(nil), zones...)
}

// SetAutoBlock replaces the spike thresholds.
func (p *Provider) SetAutoBlock(a AutoBlockConfig) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a.Window == 0 {
		a.Window = time.Hour
	}
	if a.Duration == 0 {
		a.Duration = 24 * time.Hour
	}
	p.autoblock = a
}

// SetDSNDelay sets the delay of DSNs whose rule names none.
func (p *Provider) SetDSNDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dsnDelay = d
}

// verdict is a refusal decided by the provider.
type verdict struct {
	reply  parsedReply
	reason string
}

func (p *Provider) vars(ip netip.Addr, from, rcpt string) map[string]string {
	return map[string]string{"ip": ip.String(), "from": from, "rcpt": rcpt, "host": p.hostname}
}

// admit decides a new connection before the greeting. It returns the
// outage mode to play, or a refusal.
func (p *Provider) admit(ip netip.Addr) (Outage, *verdict, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.active[ip]++
	slow := p.slow.Greeting
	if p.outage == OutageGreeting {
		return p.outage, &verdict{mustReply(p.replies.Outage, p.vars(ip, "", "")), "outage"}, slow
	}
	if p.outage == OutageReset || p.outage == OutageSilent {
		return p.outage, nil, slow
	}
	if n := p.limits.MaxConnections; n > 0 && p.active[ip] > n {
		return OutageNone, &verdict{mustReply(p.replies.Connections, p.vars(ip, "", "")), "connections"}, slow
	}
	return OutageNone, nil, slow
}

func (p *Provider) release(ip netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.active[ip]--; p.active[ip] <= 0 {
		delete(p.active, ip)
	}
}

func (p *Provider) commandDelay() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.slow.Command
}

// checkMail decides MAIL FROM: outage, blocks, DNSBL listings, the
// per-session cap and the rate window, in that order.
func (p *Provider) checkMail(ip netip.Addr, from string, inSession int) *verdict {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.sim.clock.Now()
	vars := p.vars(ip, from, "")
	if p.outage == OutageTempFail {
		return &verdict{mustReply(p.replies.Outage, vars), "outage"}
	}
	if ok, reason := p.blockedLocked(ip, now); ok {
		vars["reason"], vars["zone"] = reason, "local policy"
		return &verdict{mustReply(p.replies.Blocked, vars), "blocked"}
	}
	for _, zone := range p.dnsbl {
		if code, ok := p.sim.zone.Listed(zone, ip); ok {
			vars["zone"] = strings.TrimSuffix(zone, ".")
			vars["reason"] = fmt.Sprintf("listed in %s (%s)", vars["zone"], code)
			return &verdict{mustReply(p.replies.Blocked, vars), "dnsbl"}
		}
	}
	if n := p.limits.MaxMessagesPerConnection; n > 0 && inSession >= n {
		return &verdict{mustReply(p.replies.MessagesPerConnection, vars), "messages_per_connection"}
	}
	if n := p.limits.Rate; n > 0 {
		times := p.sent[ip]
		cut := 0
		for cut < len(times) && !times[cut].After(now.Add(-p.limits.Per)) {
			cut++
		}
		times = times[cut:]
		p.sent[ip] = times
		if len(times) >= n {
			return &verdict{mustReply(p.replies.Rate, vars), "rate"}
		}
	}
	return nil
}

// rcptFate is what the provider decided for an accepted recipient.
type rcptFate struct {
	addr     string
	dsn      *RecipientRule // non-nil: a DSN follows
	complain bool           // the rule asks for a complaint
	notify   []smtp.DSNNotify
	orcpt    string
}

// checkRcpt decides one recipient.
func (p *Provider) checkRcpt(ip netip.Addr, from, rcpt string) (rcptFate, *verdict) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.sim.clock.Now()
	vars := p.vars(ip, from, rcpt)
	fate := rcptFate{addr: rcpt}
	if !p.domains[strings.ToLower(domainOf(rcpt))] {
		return fate, &verdict{mustReply(p.replies.Relay, vars), "relay"}
	}
	rule := p.matchRule(rcpt)
	greylist := p.grey.Enabled
	if !greylist {
		for _, pat := range p.grey.Recipients {
			if matchAddr(pat, rcpt) {
				greylist = true
			}
		}
	}
	if rule != nil {
		r := *rule
		pick := func(def Reply) parsedReply {
			if r.Reply != "" {
				return mustReply(r.Reply, vars)
			}
			return mustReply(def, vars)
		}
		switch r.Action {
		case ActionUnknown:
			p.noteBounce(ip, now)
			return fate, &verdict{pick(p.replies.Unknown), "unknown"}
		case ActionFull:
			p.noteBounce(ip, now)
			return fate, &verdict{pick(p.replies.Full), "full"}
		case ActionDefer:
			return fate, &verdict{pick(p.replies.Defer), "defer"}
		case ActionReject:
			return fate, &verdict{pick(p.replies.Reject), "reject"}
		case ActionGreylist:
			greylist = true
		case ActionAccept:
			greylist = false
		case ActionDSN:
			fate.dsn = &r
		case ActionComplain:
			fate.complain = true
		}
	}
	if greylist && !p.greyPass(triplet{ip, strings.ToLower(from), strings.ToLower(rcpt)}, now) {
		return fate, &verdict{mustReply(p.replies.Greylist, vars), "greylist"}
	}
	return fate, nil
}

// greyPass applies greylisting to one triplet: the first attempt and
// retries before the delay are deferred; a retry within the window passes
// and whitelists the triplet for the TTL; a triplet not retried within the
// window starts over.
func (p *Provider) greyPass(t triplet, now time.Time) bool {
	e := p.triplets[t]
	switch {
	case e == nil:
		p.triplets[t] = &greyEntry{first: now}
		return false
	case !e.passed.IsZero():
		if now.Sub(e.passed) < p.grey.TTL {
			e.passed = now
			return true
		}
		p.triplets[t] = &greyEntry{first: now}
		return false
	case now.Sub(e.first) < p.grey.Delay:
		return false
	case now.Sub(e.first) > p.grey.Window:
		e.first = now
		return false
	default:
		e.passed = now
		return true
	}
}

func (p *Provider) matchRule(rcpt string) *RecipientRule {
	for i := range p.rules {
		if matchAddr(p.rules[i].Match, rcpt) {
			return &p.rules[i]
		}
	}
	return nil
}

// matchAddr matches a pattern against the local part, or against the
// whole address when the pattern has an "@"; case is ignored.
func matchAddr(pattern, addr string) bool {
	pattern, addr = strings.ToLower(pattern), strings.ToLower(addr)
	subject := addr
	if !strings.Contains(pattern, "@") {
		if i := strings.LastIndexByte(addr, '@'); i >= 0 {
			subject = addr[:i]
		}
	}
	ok, _ := path.Match(pattern, subject)
	return ok
}

// accepted records one accepted transaction for the rate window and
// decides which recipients are complained about.
func (p *Provider) accepted(ip netip.Addr, messageID string, fates []rcptFate) []bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent[ip] = append(p.sent[ip], p.sim.clock.Now())
	out := make([]bool, len(fates))
	for i, f := range fates {
		if f.dsn != nil {
			continue
		}
		c := p.complaints
		switch {
		case f.complain:
			out[i] = true
		case c.Every > 0:
			p.nth++
			out[i] = p.nth%c.Every == 0
		case c.Rate > 0:
			out[i] = p.rng.Float64() < c.Rate
		}
	}
	return out
}

func (p *Provider) complaintConfig() ComplaintConfig {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.complaints
}

func (p *Provider) defaultDSNDelay() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dsnDelay
}

// noteBounce and noteComplaint feed the spike detector; p.mu is held.
func (p *Provider) noteBounce(ip netip.Addr, now time.Time) {
	p.noteSpike(p.bounceLog, ip, now, p.autoblock.Bounces, "bounce spike")
}

func (p *Provider) noteComplaint(ip netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.noteSpike(p.complainLg, ip, p.sim.clock.Now(), p.autoblock.Complaints, "complaint spike")
}

func (p *Provider) noteDSNBounce(ip netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.noteBounce(ip, p.sim.clock.Now())
}

func (p *Provider) noteSpike(log map[netip.Addr][]time.Time, ip netip.Addr, now time.Time, threshold int, reason string) {
	if threshold <= 0 {
		return
	}
	times := append(log[ip], now)
	cut := 0
	for cut < len(times) && now.Sub(times[cut]) >= p.autoblock.Window {
		cut++
	}
	times = times[cut:]
	log[ip] = times
	if len(times) < threshold {
		return
	}
	if blocked, _ := p.blockedLocked(ip, now); blocked {
		return
	}
	p.blocked[ip] = block{until: now.Add(p.autoblock.Duration), reason: reason}
	p.sim.log.Info("source IP blocked", "provider", p.name, "ip", ip, "reason", reason)
	if p.autoblock.ListIn != "" {
		if err := p.sim.zone.ListIP(p.autoblock.ListIn, ip, ""); err != nil {
			p.sim.log.Warn("autoblock listing", "err", err)
		}
	}
}
