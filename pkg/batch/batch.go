// Package batch coalesces the calls of concurrent workers into one round
// trip: a call that arrives while a batch is in flight waits for it, then
// goes with every other call that queued meanwhile. An idle service pays
// no added latency (a lone call is a batch of one); a busy one pays one
// round trip for many messages instead of one each.
//
// Because a batch starts only after every call in it arrived, a batch that
// reads state (a stream's last sequence, say) reads it after each of its
// callers asked: what a caller learns is never older than its call.
package batch

import (
	"context"
	"fmt"
	"time"
)

// Batcher runs the calls of many goroutines in batches.
type Batcher[Req, Res any] struct {
	in  chan item[Req, Res]
	run func(ctx context.Context, reqs []Req) ([]Res, error)
	max int
	// linger is how long a batch waits for more calls after its first
	// (see WithLinger).
	linger time.Duration
}

type item[Req, Res any] struct {
	req Req
	out chan result[Res]
}

type result[Res any] struct {
	res Res
	err error
}

// New returns a Batcher whose batches hold at most size calls. run gets
// the requests of a batch and returns one result per request, in order, or
// an error that every call of the batch returns.
func New[Req, Res any](size int, run func(ctx context.Context, reqs []Req) ([]Res, error)) *Batcher[Req, Res] {
	size = max(size, 1)
	return &Batcher[Req, Res]{in: make(chan item[Req, Res], size), run: run, max: size}
}

// WithLinger makes each batch wait up to d for more calls after its
// first before it runs, unless it fills first: for work where a few
// milliseconds more do not matter and calls arrive one by one (counting
// events), so that a steady trickle still goes in batches. It returns b,
// and must be called before Run.
func (b *Batcher[Req, Res]) WithLinger(d time.Duration) *Batcher[Req, Res] {
	b.linger = d
	return b
}

// Do runs req in the next batch and returns its result. When ctx ends
// first it returns ctx's cause; the request may still run.
func (b *Batcher[Req, Res]) Do(ctx context.Context, req Req) (Res, error) {
	var zero Res
	it := item[Req, Res]{req: req, out: make(chan result[Res], 1)}
	select {
	case b.in <- it:
	case <-ctx.Done():
		return zero, context.Cause(ctx)
	}
	select {
	case r := <-it.out:
		return r.res, r.err
	case <-ctx.Done():
		return zero, context.Cause(ctx)
	}
}

// Run runs batches until ctx ends. Each batch gets its own deadline,
// timeout, since its calls come from many workers. Calls still queued when
// ctx ends wait until their own context ends: Run must outlive its
// callers.
func (b *Batcher[Req, Res]) Run(ctx context.Context, timeout time.Duration) {
	items := make([]item[Req, Res], 0, b.max)
	reqs := make([]Req, 0, b.max)
	// One timer serves every batch's linger (Reset and Stop leave no
	// stale tick since Go 1.23).
	var timer *time.Timer
	if b.linger > 0 {
		timer = time.NewTimer(b.linger)
		timer.Stop()
	}
	for {
		items, reqs = items[:0], reqs[:0]
		select {
		case <-ctx.Done():
			return
		case it := <-b.in:
			items = append(items, it)
		}
		if timer != nil {
			timer.Reset(b.linger)
		}
	drain:
		for len(items) < b.max {
			if timer == nil {
				select {
				case it := <-b.in:
					items = append(items, it)
				default:
					break drain
				}
				continue
			}
			select {
			case it := <-b.in:
				items = append(items, it)
			case <-timer.C:
				break drain
			case <-ctx.Done():
				break drain
			}
		}
		if timer != nil {
			timer.Stop()
		}
		for _, it := range items {
			reqs = append(reqs, it.req)
		}
		bctx, cancel := context.WithTimeout(ctx, timeout)
		res, err := b.run(bctx, reqs)
		cancel()
		if err == nil && len(res) != len(reqs) {
			err = fmt.Errorf("batch: %d results for %d requests", len(res), len(reqs))
		}
		for i, it := range items {
			var r result[Res]
			if err != nil {
				r.err = err
			} else {
				r.res = res[i]
			}
			it.out <- r
		}
	}
}
