package reputation

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/authaudit"
	"github.com/mailwave/mailwave/pkg/spf"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

const listingsKey = "rep:dnsbl"

// targets returns the sending IPs, sending domains and link domains to
// check: the configured ones and those seen in events of the last week.
func (m *monitor) targets(ctx context.Context, now time.Time) (ips, domains, links []string) {
	ips = slices.Clone(m.cfg.SourceIPs)
	domains = slices.Clone(m.cfg.SendingDomains)
	links = slices.Clone(m.cfg.LinkDomains)
	scopes, err := m.store.Scopes(ctx, now.Add(-7*24*time.Hour), 10000)
	if err != nil {
		m.log.Warn("list scopes failed", "err", err)
	}
	for _, sc := range scopes {
		switch sc.Kind {
		case mailwavev1.ScopeKind_SCOPE_KIND_SOURCE_IP:
			ips = append(ips, sc.Value)
		case mailwavev1.ScopeKind_SCOPE_KIND_SENDING_DOMAIN:
			domains = append(domains, sc.Value)
		}
	}
	slices.Sort(ips)
	slices.Sort(domains)
	slices.Sort(links)
	return slices.Compact(ips), slices.Compact(domains), slices.Compact(links)
}

func (m *monitor) dnsblLoop(ctx context.Context) {
	m.checkBlocklists(ctx, time.Now())
	every(ctx, m.cfg.DNSBLInterval, func(ctx context.Context) { m.checkBlocklists(ctx, time.Now()) })
}

// checkBlocklists looks every target up in every zone of its kind and acts
// on changes. A lookup that fails or is refused leaves the state as it was.
func (m *monitor) checkBlocklists(ctx context.Context, now time.Time) {
	ips, domains, links := m.targets(ctx, now)
	for _, bl := range m.policy.Blocklists {
		var list []string
		if bl.Kind == "ip" {
			list = ips
		} else {
			list = append(slices.Clone(domains), links...)
		}
		for _, target := range list {
			l, err := m.dnsbl.Lookup(ctx, bl, target)
			if err != nil {
				kind := "failed"
				if errors.Is(err, ErrRefused) {
					kind = "refused"
				}
				m.blErrors.WithLabelValues(bl.Zone, kind).Inc()
				m.log.Debug("blocklist lookup said nothing", "zone", bl.Zone, "target", target, "err", err)
				continue
			}
			if err := m.applyListing(ctx, bl, target, l, slices.Contains(domains, target), now); err != nil {
				m.log.Warn("blocklist state not updated", "zone", bl.Zone, "target", target, "err", err)
			}
		}
	}
}

// listingScope is the policy scope a listing pauses: the IP everywhere,
// or the sending domain everywhere. Link domains only raise alerts.
func listingScope(bl Blocklist, target string, sending bool) (Scope, bool) {
	if bl.Kind == "ip" {
		if a, err := netip.ParseAddr(target); err == nil {
			return Scope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_SOURCE_IP, Value: a.Unmap().String()}, true
		}
		return Scope{}, false
	}
	if sending {
		return Scope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_SENDING_DOMAIN, Value: target}, true
	}
	return Scope{}, false
}

func (m *monitor) applyListing(ctx context.Context, bl Blocklist, target string, l Listing, sending bool, now time.Time) error {
	field := bl.Zone + "\x1f" + target
	decidedBy := "dnsbl:" + bl.Zone
	sc, hasScope := listingScope(bl, target, sending)
	if l.Listed {
		m.listed.WithLabelValues(bl.Zone, target).Set(1)
		first, err := m.rt.Redis.HSetNX(ctx, listingsKey, field, l.Code).Result()
		if err != nil {
			return err
		}
		if first {
			m.alert(ctx, fmt.Sprintf("listed-%s-%s-%d", bl.Zone, target, now.Unix()), "dnsbl_listed", "critical", target,
				fmt.Sprintf("%s listed in %s: %s", target, bl.Zone, l.Meaning),
				map[string]string{"zone": bl.Zone, "code": l.Code, "meaning": l.Meaning}, now)
		}
		if !hasScope {
			return nil
		}
		cur, rev := m.decider.Current(sc.Key())
		if live(cur, now) && cur.GetAction() == mailwavev1.PolicyAction_POLICY_ACTION_PAUSE {
			return nil
		}
		if !automatic(cur, now) {
			return nil
		}
		pc := NewChange(sc, mailwavev1.PolicyAction_POLICY_ACTION_PAUSE, 0,
			fmt.Sprintf("%s listed in %s (%s %s)", target, bl.Zone, l.Code, l.Meaning), decidedBy,
			map[string]string{"zone": bl.Zone, "code": l.Code, "meaning": l.Meaning}, now, m.cfg.ListingPause)
		if err := m.decider.Write(ctx, pc, rev); err != nil && !errors.Is(err, ErrConflict) {
			return err
		}
		return nil
	}
	m.listed.DeleteLabelValues(bl.Zone, target)
	n, err := m.rt.Redis.HDel(ctx, listingsKey, field).Result()
	if err != nil || n == 0 {
		return err
	}
	m.alert(ctx, fmt.Sprintf("delisted-%s-%s-%d", bl.Zone, target, now.Unix()), "dnsbl_delisted", "info", target,
		fmt.Sprintf("%s no longer listed in %s", target, bl.Zone), map[string]string{"zone": bl.Zone}, now)
	if !hasScope {
		return nil
	}
	// Still listed elsewhere: the pause stands.
	fields, err := m.rt.Redis.HKeys(ctx, listingsKey).Result()
	if err != nil {
		return err
	}
	for _, f := range fields {
		if strings.HasSuffix(f, "\x1f"+target) {
			return nil
		}
	}
	cur, rev := m.decider.Current(sc.Key())
	if cur == nil || !strings.HasPrefix(cur.GetDecidedBy(), "dnsbl:") || !live(cur, now) {
		return nil
	}
	pc := m.decider.climb(cur, now, "delisted from "+bl.Zone)
	if err := m.decider.Write(ctx, pc, rev); err != nil && !errors.Is(err, ErrConflict) {
		return err
	}
	return nil
}

func (m *monitor) auditLoop(ctx context.Context) {
	run := func(ctx context.Context) {
		_, domains, _ := m.targets(ctx, time.Now())
		for _, d := range domains {
			if _, err := m.audit(ctx, d, time.Now()); err != nil {
				m.log.Warn("audit failed to run", "domain", d, "err", err)
			}
		}
	}
	run(ctx)
	every(ctx, m.cfg.AuditInterval, run)
}

// audit runs the authentication audit of domain, stores it in the audits
// bucket and raises an alert when it fails where it passed before.
func (m *monitor) audit(ctx context.Context, domain string, now time.Time) (*mailwavev1.AuthAudit, error) {
	req := authaudit.Request{Domain: domain, Selector: m.cfg.DKIMSelector, BounceDomain: m.cfg.BounceDomain,
		EHLONames: map[netip.Addr]string{}}
	if req.BounceDomain == "" {
		req.BounceDomain = "bounces." + strings.TrimSuffix(domain, ".")
	}
	for i, s := range m.cfg.SourceIPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		req.IPs = append(req.IPs, a)
		if i < len(m.cfg.HeloNames) {
			req.EHLONames[a] = m.cfg.HeloNames[i]
		}
	}
	a := &authaudit.Auditor{Resolver: spf.NewResolver(m.cfg.DNSServer, 5*time.Second)}
	rep, err := a.Audit(ctx, req, now)
	if err != nil {
		return nil, err
	}
	out := &mailwavev1.AuthAudit{Domain: rep.Domain, Ok: rep.OK(), AuditedAt: timestamppb.New(now)}
	for _, c := range rep.Checks {
		out.Checks = append(out.Checks, &mailwavev1.AuthCheck{Name: c.Name, Ok: c.OK, Problems: c.Problems, Fix: c.Fix})
	}
	key := mailwavev1.KeyToken(rep.Domain)
	wasOK := true
	if e, err := m.audits.Get(ctx, key); err == nil {
		prev := &mailwavev1.AuthAudit{}
		if proto.Unmarshal(e.Value(), prev) == nil {
			wasOK = prev.GetOk()
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, err
	}
	data, err := proto.Marshal(out)
	if err != nil {
		return nil, err
	}
	if _, err := m.audits.Put(ctx, key, data); err != nil {
		return nil, err
	}
	v := 0.0
	if out.Ok {
		v = 1
	}
	m.auditOK.WithLabelValues(rep.Domain).Set(v)
	if !out.Ok && wasOK {
		ev := map[string]string{}
		for _, c := range rep.Checks {
			if !c.OK {
				ev[c.Name] = strings.Join(c.Problems, "; ")
			}
		}
		m.alert(ctx, fmt.Sprintf("audit-%s-%d", key, now.Unix()), "audit_failed", "critical", rep.Domain,
			"authentication audit of "+rep.Domain+" failed", ev, now)
	}
	return out, nil
}
