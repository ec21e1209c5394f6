package batch

import (
	"context"
	"sync"
	"time"
)

// Fresh shares one read among every caller that asks while the previous
// read is out: a caller joins the next read, which starts only once every
// caller in it has asked, so what Get returns was read after Get was
// called. Many callers at once cost one read per round trip instead of
// one each. It needs no goroutine of its own between bursts.
type Fresh[T any] struct {
	read    func(ctx context.Context) (T, error)
	timeout time.Duration

	mu      sync.Mutex
	next    *round[T] // the read new callers join, not started yet
	running bool
}

type round[T any] struct {
	done chan struct{}
	val  T
	err  error
}

// NewFresh returns a Fresh that reads with read, giving each read timeout.
func NewFresh[T any](timeout time.Duration, read func(ctx context.Context) (T, error)) *Fresh[T] {
	return &Fresh[T]{read: read, timeout: timeout}
}

// Get returns a value read after the call, or the read's error; when ctx
// ends first, ctx's error.
func (f *Fresh[T]) Get(ctx context.Context) (T, error) {
	f.mu.Lock()
	rd := f.next
	if rd == nil {
		rd = &round[T]{done: make(chan struct{})}
		f.next = rd
	}
	if !f.running {
		f.running, f.next = true, nil
		go f.loop(rd)
	}
	f.mu.Unlock()
	select {
	case <-rd.done:
		return rd.val, rd.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// loop runs rd, then the reads that callers joined meanwhile, until none
// did.
func (f *Fresh[T]) loop(rd *round[T]) {
	for rd != nil {
		ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
		rd.val, rd.err = f.read(ctx)
		cancel()
		close(rd.done)
		f.mu.Lock()
		rd, f.next = f.next, nil
		if rd == nil {
			f.running = false
		}
		f.mu.Unlock()
	}
}
