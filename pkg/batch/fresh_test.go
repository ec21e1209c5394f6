package batch_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/batch"
)

// Every caller gets a value read after its call, and callers that ask
// while a read is out share the next one.
func TestFreshReadsAfterEveryCall(t *testing.T) {
	var version atomic.Int64 // what the store holds
	var reads atomic.Int64
	gate := make(chan struct{})
	f := batch.NewFresh(time.Minute, func(ctx context.Context) (int64, error) {
		reads.Add(1)
		v := version.Load()
		<-gate
		return v, nil
	})
	ctx := t.Context()
	first := make(chan int64)
	go func() {
		v, _ := f.Get(ctx)
		first <- v
	}()
	// The first read is out (it waits on gate), and has seen version 0.
	for reads.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// The store moves on; callers asking now must see it.
	version.Store(7)
	var wg sync.WaitGroup
	got := make([]int64, 10)
	for i := range got {
		wg.Go(func() {
			v, err := f.Get(ctx)
			if err != nil {
				t.Error(err)
			}
			got[i] = v
		})
	}
	// Let every read finish.
	go func() {
		for {
			select {
			case gate <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	if v := <-first; v != 0 {
		t.Errorf("first caller got %d", v)
	}
	wg.Wait()
	for i, v := range got {
		if v != 7 {
			t.Errorf("caller %d got %d, read before its call", i, v)
		}
	}
	if n := reads.Load(); n > 11 || n < 2 {
		t.Errorf("%d reads for 11 calls", n)
	}
}

func TestFreshGivesUpWithTheCaller(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	f := batch.NewFresh(time.Minute, func(ctx context.Context) (int, error) {
		<-block
		return 1, nil
	})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := f.Get(ctx); err == nil {
		t.Fatal("a cancelled caller must not wait for the read")
	}
}
