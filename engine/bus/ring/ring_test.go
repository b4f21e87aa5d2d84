package ring

import (
	"sync"
	"testing"
	"unsafe"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFIFOOrder(t *testing.T) {
	r := New[int](8)
	for i := 0; i < 8; i++ {
		if !r.TryPush(i) {
			t.Fatalf("push %d failed on a ring with room", i)
		}
	}
	for i := 0; i < 8; i++ {
		v, ok := r.TryPop()
		if !ok || v != i {
			t.Fatalf("pop %d = %d,%v; want %d,true", i, v, ok, i)
		}
	}
	if _, ok := r.TryPop(); ok {
		t.Fatal("pop from empty ring succeeded")
	}
}

func TestBoundedPushFailsWhenFull(t *testing.T) {
	r := New[int](5) // rounds up to 8
	if r.Cap() != 8 {
		t.Fatalf("Cap = %d, want 8", r.Cap())
	}
	for i := 0; i < 8; i++ {
		r.TryPush(i)
	}
	if r.TryPush(99) {
		t.Fatal("push to a full ring succeeded")
	}
	if r.Len() != 8 {
		t.Fatalf("Len = %d, want 8", r.Len())
	}
	if n := r.PushBatch([]int{1, 2}); n != 0 {
		t.Fatalf("PushBatch on full ring = %d, want 0", n)
	}
	r.TryPop()
	if n := r.PushBatch([]int{1, 2}); n != 1 {
		t.Fatalf("PushBatch with one free slot = %d, want 1", n)
	}
}

func TestBatchRoundTripWrapsAround(t *testing.T) {
	r := New[int](8)
	next, want := 0, 0
	dst := make([]int, 5)
	for lap := 0; lap < 50; lap++ {
		in := []int{next, next + 1, next + 2}
		n := r.PushBatch(in)
		next += n
		m := r.PopBatch(dst)
		for _, v := range dst[:m] {
			if v != want {
				t.Fatalf("lap %d: popped %d, want %d", lap, v, want)
			}
			want++
		}
	}
}

func TestPopZeroesSlots(t *testing.T) {
	r := New[*int](2)
	x := 1
	r.TryPush(&x)
	r.TryPop()
	for i := range r.slots {
		if r.slots[i].val != nil {
			t.Fatalf("slot %d still references a popped value", i)
		}
	}
	r.PushBatch([]*int{&x, &x})
	r.PopBatch(make([]*int, 2))
	for i := range r.slots {
		if r.slots[i].val != nil {
			t.Fatalf("slot %d still references a batch-popped value", i)
		}
	}
}

// TestConcurrentExactlyOnce runs pushers (single and batch), an evicting
// pusher that pops the oldest when full (the bus's DropOldest), and a
// batch consumer, and checks every value is seen exactly once.
func TestConcurrentExactlyOnce(t *testing.T) {
	const producers, perProducer = 4, 8000
	r := New[uint64](64)
	var wg sync.WaitGroup
	var evicted sync.Map
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			base := uint64(p) << 32
			i := 0
			for i < perProducer {
				switch {
				case p == 0: // evicting producer
					v := base | uint64(i)
					for !r.TryPush(v) {
						if old, ok := r.TryPop(); ok {
							evicted.Store(old, true)
						}
					}
					i++
				case p%2 == 1:
					if r.TryPush(base | uint64(i)) {
						i++
					}
				default:
					batch := make([]uint64, 0, 7)
					for j := i; j < perProducer && len(batch) < 7; j++ {
						batch = append(batch, base|uint64(j))
					}
					i += r.PushBatch(batch)
				}
			}
		}(p)
	}
	seen := make(map[uint64]int, producers*perProducer)
	lastPer := make(map[uint64]int64)
	done := make(chan struct{})
	var cwg sync.WaitGroup
	cwg.Add(1)
	go func() {
		defer cwg.Done()
		dst := make([]uint64, 16)
		record := func(vs []uint64) {
			for _, v := range vs {
				seen[v]++
				p := v >> 32
				idx := int64(v & 0xffffffff)
				if last, ok := lastPer[p]; ok && idx <= last {
					t.Errorf("producer %d: value %d after %d (FIFO broken)", p, idx, last)
				}
				lastPer[p] = idx
			}
		}
		for {
			n := r.PopBatch(dst)
			record(dst[:n])
			if n == 0 {
				select {
				case <-done:
					for {
						n := r.PopBatch(dst)
						if n == 0 {
							return
						}
						record(dst[:n])
					}
				default:
				}
			}
		}
	}()
	wg.Wait()
	close(done)
	cwg.Wait()
	total := 0
	evicted.Range(func(k, _ any) bool {
		seen[k.(uint64)]++
		return true
	})
	for v, c := range seen {
		if c != 1 {
			t.Fatalf("value %x seen %d times", v, c)
		}
		total++
	}
	if total != producers*perProducer {
		t.Fatalf("saw %d distinct values, want %d", total, producers*perProducer)
	}
}

func TestHeadAndTailOnSeparateCacheLines(t *testing.T) {
	var r Ring[int]
	d := unsafe.Offsetof(r.head) - unsafe.Offsetof(r.tail)
	if d < cacheLine {
		t.Fatalf("head and tail %d bytes apart, want >= %d", d, cacheLine)
	}
}

func BenchmarkPushPop(b *testing.B) {
	r := New[int](1024)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r.TryPush(i)
		r.TryPop()
	}
}
