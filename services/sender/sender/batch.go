package sender

import (
	"context"
	"time"
)

// batcher coalesces the Redis calls of concurrent workers: a call that
// arrives while a batch is in flight waits for it, then goes with every
// other call that queued meanwhile, in one pipelined round trip. An idle
// sender pays no added latency (a lone call is a batch of one); a busy one
// pays one round trip for many messages instead of one each, which is
// most of what a message costs the sender in system calls.
type batcher[Req, Res any] struct {
	in  chan batchItem[Req, Res]
	run func(ctx context.Context, reqs []Req) ([]Res, error)
	max int
}

type batchItem[Req, Res any] struct {
	req Req
	out chan batchResult[Res]
}

type batchResult[Res any] struct {
	res Res
	err error
}

func newBatcher[Req, Res any](max int, run func(ctx context.Context, reqs []Req) ([]Res, error)) *batcher[Req, Res] {
	return &batcher[Req, Res]{in: make(chan batchItem[Req, Res], max), run: run, max: max}
}

// do runs req in the next batch and returns its result. When ctx ends
// first it returns ctx's error; the request may still run.
func (b *batcher[Req, Res]) do(ctx context.Context, req Req) (Res, error) {
	var zero Res
	it := batchItem[Req, Res]{req: req, out: make(chan batchResult[Res], 1)}
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

// loop runs batches until ctx ends. Each batch gets its own deadline,
// since its calls come from many workers.
func (b *batcher[Req, Res]) loop(ctx context.Context, timeout time.Duration) {
	items := make([]batchItem[Req, Res], 0, b.max)
	reqs := make([]Req, 0, b.max)
	for {
		items, reqs = items[:0], reqs[:0]
		select {
		case <-ctx.Done():
			return
		case it := <-b.in:
			items = append(items, it)
		}
	drain:
		for len(items) < b.max {
			select {
			case it := <-b.in:
				items = append(items, it)
			default:
				break drain
			}
		}
		for _, it := range items {
			reqs = append(reqs, it.req)
		}
		bctx, cancel := context.WithTimeout(ctx, timeout)
		res, err := b.run(bctx, reqs)
		cancel()
		for i, it := range items {
			var r batchResult[Res]
			if err != nil {
				r.err = err
			} else {
				r.res = res[i]
			}
			it.out <- r
		}
	}
}
