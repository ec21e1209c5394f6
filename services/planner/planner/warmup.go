package planner

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/mailwave/mailwave/pkg/mx"
	"github.com/mailwave/mailwave/pkg/warmup"
)

// capByWarmup keeps the candidates that today's warm-up caps allow, per
// provider: first the sending domain's (when the domain is new), then the
// source IP's (when the IP is new). A recipient whose new IP is at its cap
// moves to a warm IP of the pool when the pool spills; otherwise, like one
// over the domain's cap, it waits for a later pass (the next day), or is
// dropped with the reason once the request's max age has passed.
// Transactional mail is counted but never held back.
func (p *planner) capByWarmup(ctx context.Context, r *request, cands []*item) ([]*item, error) {
	domSched := r.route.DomainSchedule
	ipSched := r.route.PoolSchedule
	if domSched == nil && !r.hasNewIPs() {
		return cands, nil
	}
	// One request per subject, asking for every candidate on it; the
	// first Granted of them (in audience order) get it.
	var reqs []warmup.Request
	index := map[warmup.Subject]int{}
	want := func(s warmup.Subject, sched *warmup.Schedule) {
		i, ok := index[s]
		if !ok {
			i = len(reqs)
			index[s] = i
			reqs = append(reqs, warmup.Request{Subject: s, Schedule: sched, Force: r.tx})
		}
		reqs[i].N++
	}
	domSubject := func(it *item) warmup.Subject {
		return warmup.Subject{Kind: warmup.Domain, ID: r.sendingDomain, Provider: mx.Token(it.provider)}
	}
	ipSubject := func(it *item, ip int) warmup.Subject {
		return warmup.Subject{Kind: warmup.IP, ID: r.ips[ip].IP, Provider: mx.Token(it.provider)}
	}
	// Round 1: the domain's caps.
	kept := cands
	if domSched != nil {
		for _, it := range cands {
			want(domSubject(it), domSched)
		}
		grants, err := p.ramp.Reserve(ctx, r.now, reqs)
		if err != nil {
			return nil, err
		}
		left := make([]int64, len(grants))
		for i, g := range grants {
			left[i] = g.Granted
		}
		kept = kept[:0:0]
		for _, it := range cands {
			i := index[domSubject(it)]
			if left[i] > 0 {
				left[i]--
				it.reserved = append(it.reserved, reqs[i].Subject)
				kept = append(kept, it)
				continue
			}
			p.overCap(ctx, r, it, fmt.Sprintf("sending domain %s reached its warm-up cap at %s today (%d)", r.sendingDomain, it.provider, grants[i].Cap))
		}
	}
	if !r.hasNewIPs() {
		return kept, nil
	}
	// Round 2: the new IPs' caps.
	reqs, index = nil, map[warmup.Subject]int{}
	for _, it := range kept {
		if it.ip >= 0 && r.ips[it.ip].New {
			want(ipSubject(it, it.ip), ipSched)
		}
	}
	if len(reqs) == 0 {
		return kept, nil
	}
	grants, err := p.ramp.Reserve(ctx, r.now, reqs)
	if err != nil {
		p.releaseAll(ctx, r, kept)
		return nil, err
	}
	left := make([]int64, len(grants))
	for i, g := range grants {
		left[i] = g.Granted
	}
	out := kept[:0:0]
	for _, it := range kept {
		if it.ip < 0 || !r.ips[it.ip].New {
			out = append(out, it)
			continue
		}
		s := ipSubject(it, it.ip)
		i := index[s]
		if left[i] > 0 {
			left[i]--
			it.reserved = append(it.reserved, s)
			out = append(out, it)
			continue
		}
		if alt := r.spillIP(it.addr); alt >= 0 {
			it.ip = alt
			p.spilled.WithLabelValues(it.provider).Inc()
			out = append(out, it)
			continue
		}
		p.releaseAll(ctx, r, []*item{it})
		p.overCap(ctx, r, it, fmt.Sprintf("source IP %s reached its warm-up cap at %s today (%d)", r.ips[it.ip].IP, it.provider, grants[i].Cap))
	}
	return out, nil
}

// overCap leaves a recipient for a later pass, or drops it once the
// request's max age has passed.
func (p *planner) overCap(ctx context.Context, r *request, it *item, why string) {
	if r.lastCall {
		p.drop(ctx, r, it, "not sent within the max age: "+why)
		it.done = true
		return
	}
	r.leftover++
}

func (r *request) hasNewIPs() bool { return len(r.warm) < len(r.ips) }

// releaseAll gives back the warm-up volume reserved for items that will
// not be sent after all.
func (p *planner) releaseAll(ctx context.Context, r *request, items []*item) {
	for _, it := range items {
		for _, s := range it.reserved {
			if err := p.ramp.Release(ctx, r.now, s, 1); err != nil {
				p.log.Warn("warm-up volume not released", "subject", s.String(), "err", err)
			}
		}
		it.reserved = nil
	}
}

// serveWarmup answers GET /warmup/{kind}/{id}/{provider}: where an IP or
// domain stands on its ramp today towards a provider, as JSON.
func (p *planner) serveWarmup(w http.ResponseWriter, req *http.Request) {
	kind := warmup.Kind(req.PathValue("kind"))
	if kind != warmup.IP && kind != warmup.Domain {
		http.Error(w, "kind is ip or domain", http.StatusBadRequest)
		return
	}
	s := warmup.Subject{Kind: kind, ID: req.PathValue("id"), Provider: mx.Token(req.PathValue("provider"))}
	sched := p.tenancy.Warmup
	for _, pool := range p.tenancy.Pools {
		for _, ip := range pool.IPs {
			if kind == warmup.IP && ip.IP == s.ID && pool.Warmup != nil {
				sched = pool.Warmup
			}
		}
	}
	if d := p.tenancy.Domains[s.ID]; kind == warmup.Domain && d != nil && d.Warmup != nil {
		sched = d.Warmup
	}
	if sched == nil {
		d := warmup.Default()
		sched = &d
	}
	now := p.now()
	g, err := p.ramp.Status(req.Context(), now, s, sched)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"kind": kind, "id": s.ID, "provider": s.Provider, "day": g.Day, "cap": g.Cap, "used": g.Used, "warm": g.Warm,
		"date": now.UTC().Format(time.DateOnly),
	})
}
