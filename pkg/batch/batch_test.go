package batch_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mailwave/mailwave/pkg/batch"
)

// Calls made while a batch is in flight go together in the next one, each
// gets its own result, and no batch exceeds its size. In a synctest
// bubble, so that "while a batch is in flight" is exact: every call has
// queued before the first batch ends.
func TestCallsDuringABatchGoTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		release := make(chan struct{})
		var mu sync.Mutex
		var sizes []int
		b := batch.New(8, func(ctx context.Context, reqs []int) ([]int, error) {
			mu.Lock()
			sizes = append(sizes, len(reqs))
			first := len(sizes) == 1
			mu.Unlock()
			if first {
				<-release
			}
			out := make([]int, len(reqs))
			for i, r := range reqs {
				out[i] = r * 10
			}
			return out, nil
		})
		go b.Run(ctx, time.Minute)

		got := make([]int, 21)
		var wg sync.WaitGroup
		wg.Go(func() { got[0], _ = b.Do(ctx, 0) })
		synctest.Wait() // the first batch is in flight
		for i := 1; i <= 20; i++ {
			wg.Go(func() {
				v, err := b.Do(ctx, i)
				if err != nil {
					t.Error(err)
				}
				got[i] = v
			})
		}
		synctest.Wait() // every call has queued behind it
		close(release)
		wg.Wait()
		for i, v := range got {
			if v != i*10 {
				t.Errorf("call %d got %d, want %d", i, v, i*10)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		total := 0
		for _, n := range sizes {
			if n > 8 {
				t.Errorf("a batch of %d calls, more than 8", n)
			}
			total += n
		}
		if total != 21 {
			t.Errorf("%d calls ran, want 21", total)
		}
		// The calls queued behind the first batch fill the next one.
		if len(sizes) < 2 || sizes[0] != 1 || sizes[1] != 8 {
			t.Errorf("batches %v: want 1 call, then a full batch of 8", sizes)
		}
	})
}

func TestErrorsReachEveryCallOfTheBatch(t *testing.T) {
	ctx := t.Context()
	boom := errors.New("boom")
	b := batch.New(4, func(ctx context.Context, reqs []string) ([]string, error) { return nil, boom })
	go b.Run(ctx, time.Minute)
	if _, err := b.Do(ctx, "x"); !errors.Is(err, boom) {
		t.Fatalf("err %v, want boom", err)
	}
	short := batch.New(4, func(ctx context.Context, reqs []string) ([]string, error) { return nil, nil })
	go short.Run(ctx, time.Minute)
	if _, err := short.Do(ctx, "x"); err == nil {
		t.Fatal("a run that returns too few results must fail its calls")
	}
}

func TestACallGivesUpWithItsContext(t *testing.T) {
	b := batch.New(4, func(ctx context.Context, reqs []int) ([]int, error) { return make([]int, len(reqs)), nil })
	// Nothing runs the batches: the call waits until its context ends.
	ctx, cancel := context.WithCancelCause(t.Context())
	cause := errors.New("caller gone")
	cancel(cause)
	if _, err := b.Do(ctx, 1); !errors.Is(err, cause) {
		t.Fatalf("err %v, want the context's cause", err)
	}
}

// Each batch gets its own deadline.
func TestEachBatchHasADeadline(t *testing.T) {
	ctx := t.Context()
	b := batch.New(4, func(ctx context.Context, reqs []int) ([]int, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	go b.Run(ctx, 10*time.Millisecond)
	if _, err := b.Do(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the batch's deadline", err)
	}
}

// With a linger, calls that arrive one by one still go together.
func TestLingerGathersATrickle(t *testing.T) {
	ctx := t.Context()
	var mu sync.Mutex
	var sizes []int
	b := batch.New(64, func(ctx context.Context, reqs []int) ([]int, error) {
		mu.Lock()
		sizes = append(sizes, len(reqs))
		mu.Unlock()
		return reqs, nil
	})
	b.WithLinger(time.Hour) // only a full batch runs
	go b.Run(ctx, time.Minute)
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			if v, err := b.Do(ctx, i); err != nil || v != i {
				t.Errorf("call %d: %d %v", i, v, err)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 1 || sizes[0] != 64 {
		t.Errorf("batches %v, want one of 64", sizes)
	}
}
