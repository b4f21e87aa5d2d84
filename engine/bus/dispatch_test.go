package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/adapter"
)

func TestEndToEndEveryEventStoredInShardOrder(t *testing.T) {
	f := newFaulty()
	defer f.Close()
	b := newBus(t, f, Config{BaseShards: 3, RingCapacity: 256, Backpressure: FailProducer(),
		Batch: BatchConfig{Min: 8, Max: 128, MaxDelay: time.Millisecond}})
	const producers, each = 3, 2000
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for i := 0; i < each; {
				if _, err := b.IngestRaw(u64(uint64(p)<<32 | uint64(i))); err != nil {
					if errors.Is(err, ErrBackpressure) {
						time.Sleep(10 * time.Microsecond)
						continue
					}
					t.Error(err)
					return
				}
				i++
			}
		}(p)
	}
	wg.Wait()
	if err := b.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	total := 0
	for id := uint16(0); id < 3; id++ {
		last := map[uint64]int64{}
		for _, e := range stored(t, f, id) {
			var v uint64
			for _, c := range e.Payload {
				v = v<<8 | uint64(c)
			}
			p, i := v>>32, int64(v&0xffffffff)
			if l, ok := last[p]; ok && i <= l {
				t.Fatalf("shard %d: producer %d event %d stored after %d", id, p, i, l)
			}
			last[p] = i
			total++
		}
	}
	if total != producers*each {
		t.Fatalf("stored %d events, want %d", total, producers*each)
	}
	st := b.Stats()
	if st.EventsDispatched != producers*each || st.EventsDropped != 0 {
		t.Fatalf("stats %+v", st)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// Release note: "add_events(vec![]) flushes as a side effect" /
// add_events_empty_can_flush_via_timeout: a partial batch below Batch.Min is
// dispatched once MaxDelay passes, with no further events arriving.
func TestPartialBatchFlushesAfterMaxDelay(t *testing.T) {
	f := newFaulty()
	defer f.Close()
	b := newBus(t, f, Config{Batch: BatchConfig{Min: 1000, Max: 2000, MaxDelay: 5 * time.Millisecond}})
	defer b.Close()
	b.IngestRaw([]byte("lonely"))
	eventually(t, "the lone event to be dispatched", func() bool { return b.Stats().EventsDispatched == 1 })
	if got := f.batchSizes(); fmt.Sprint(got) != "[1]" {
		t.Fatalf("batches = %v, want one batch of 1", got)
	}
}

func TestAdaptiveBatchGrowsUnderLoad(t *testing.T) {
	f := newFaulty()
	defer f.Close()
	gate := make(chan struct{})
	var first atomic.Bool
	// Hold the first dispatch so events pile up behind it, then release:
	// the worker must take them in batches larger than Min.
	f.set(func(ctx context.Context, _ adapter.Batch) error {
		if first.CompareAndSwap(false, true) {
			<-gate
		}
		return nil
	})
	b := newBus(t, f, Config{RingCapacity: 1 << 12, Backpressure: FailProducer(),
		Batch: BatchConfig{Min: 4, Max: 256, MaxDelay: time.Millisecond}})
	defer b.Close()
	for i := 0; i < 4; i++ {
		b.IngestRaw(nil)
	}
	eventually(t, "first batch in flight", first.Load)
	for i := 0; i < 2000; i++ {
		if _, err := b.IngestRaw(nil); err != nil {
			t.Fatal(err)
		}
	}
	close(gate)
	if err := b.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	largest := 0
	for _, n := range f.batchSizes() {
		largest = max(largest, n)
		if n > 256 {
			t.Fatalf("batch of %d exceeds Max 256", n)
		}
	}
	if largest <= 4 {
		t.Fatalf("largest batch %d: batch size never grew past Min", largest)
	}
}

// Release note: "dispatch_batch final attempt collapses error reasons".
func TestDispatchRecordsEveryAttemptReason(t *testing.T) {
	f := newFaulty()
	defer f.Close()
	var n atomic.Int32
	f.set(func(context.Context, adapter.Batch) error {
		return fmt.Errorf("transient failure #%d", n.Add(1))
	})
	var got atomic.Pointer[DispatchError]
	b := newBus(t, f, Config{MaxAttempts: 3, RetryBase: time.Microsecond, RetryMax: 10 * time.Microsecond,
		Batch:           BatchConfig{Min: 1, MaxDelay: time.Millisecond},
		OnDispatchError: func(e *DispatchError) { got.Store(e) }})
	b.IngestRaw([]byte("x"))
	eventually(t, "the batch to be given up", func() bool { return got.Load() != nil })
	de := got.Load()
	if len(de.Attempts) != 3 {
		t.Fatalf("%d attempts recorded, want 3: %v", len(de.Attempts), de)
	}
	for i, a := range de.Attempts {
		if want := fmt.Sprintf("transient failure #%d", i+1); a.Err.Error() != want || a.N != i {
			t.Fatalf("attempt %d reason %q (N=%d), want %q", i, a.Err, a.N, want)
		}
	}
	if st := b.Stats(); st.DispatchFailures != 1 || st.EventsDropped != 1 {
		t.Fatalf("stats %+v, want 1 failure and 1 dropped", st)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close after a counted dispatch failure: %v", err)
	}
}

func TestDispatchRetriesTransientThenSucceeds(t *testing.T) {
	f := newFaulty()
	defer f.Close()
	var n atomic.Int32
	f.set(func(context.Context, adapter.Batch) error {
		if n.Add(1) <= 2 {
			return errors.New("try again")
		}
		return nil
	})
	b := newBus(t, f, Config{RetryBase: time.Microsecond, RetryMax: 10 * time.Microsecond,
		Batch: BatchConfig{Min: 1, MaxDelay: time.Millisecond}})
	defer b.Close()
	b.IngestRaw([]byte("x"))
	b.Flush(context.Background())
	if got := len(stored(t, f, 0)); got != 1 || n.Load() != 3 {
		t.Fatalf("stored %d after %d calls, want 1 after 3", got, n.Load())
	}
}

func TestDispatchFatalIsNotRetried(t *testing.T) {
	f := newFaulty()
	defer f.Close()
	f.set(func(context.Context, adapter.Batch) error { return adapter.Fatal("bad config") })
	var got atomic.Pointer[DispatchError]
	b := newBus(t, f, Config{MaxAttempts: 5, RetryBase: time.Microsecond,
		Batch: BatchConfig{Min: 1, MaxDelay: time.Millisecond}, OnDispatchError: func(e *DispatchError) { got.Store(e) }})
	defer b.Close()
	b.IngestRaw(nil)
	eventually(t, "the fatal batch to be reported", func() bool { return got.Load() != nil })
	if de := got.Load(); len(de.Attempts) != 1 || !errors.Is(de, adapter.ErrFatal) {
		t.Fatalf("fatal error retried: %v", de)
	}
}

// Release note: "dispatch_batch retry sleep has no jitter / backoff" and the
// retry_backoff jitter test (>= 4 distinct of 16).
func TestRetryBackoffJitteredExponential(t *testing.T) {
	base, maxD := 10*time.Millisecond, time.Second
	for attempt := 0; attempt < 10; attempt++ {
		ceiling := min(base<<attempt, maxD)
		distinct := map[time.Duration]bool{}
		for s := uint16(0); s < 16; s++ {
			d := RetryBackoff(s, attempt, base, maxD, "seed")
			if d < ceiling/2 || d >= ceiling {
				t.Fatalf("attempt %d shard %d: %s outside [%s, %s)", attempt, s, d, ceiling/2, ceiling)
			}
			distinct[d] = true
		}
		if len(distinct) < 4 {
			t.Fatalf("attempt %d: only %d distinct delays over 16 shards", attempt, len(distinct))
		}
	}
	if RetryBackoff(3, 200, base, maxD, "s") >= maxD {
		t.Fatal("huge attempt overflowed past the cap")
	}
	if a, b := RetryBackoff(1, 2, base, maxD, "x"), RetryBackoff(1, 2, base, maxD, "x"); a != b {
		t.Fatal("backoff not a function of (seed, shard, attempt)")
	}
}
