package bus

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/adapter"
)

func ticketBus(t *testing.T, a adapter.Adapter, shards ...uint16) *Bus {
	t.Helper()
	b := newBus(t, a, Config{NoBaseShards: true, Backpressure: FailProducer(), MaxAttempts: 1})
	t.Cleanup(func() { _ = b.Close() })
	for _, id := range shards {
		if err := b.AddShard(id); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestNoBaseShardsStartsEmptyAndRefusesKeyedIngest(t *testing.T) {
	b := ticketBus(t, newFaulty())
	if got := b.Shards(); len(got) != 0 {
		t.Fatalf("shards %v, want none", got)
	}
	if err := b.AddShard(7); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Ingest(Event{Key: []byte("k"), Payload: []byte("p")}); !errors.Is(err, ErrUnrouted) {
		t.Fatalf("keyed ingest without base shards: want ErrUnrouted, got %v", err)
	}
	if _, err := b.IngestTo(3, []byte("p")); !errors.Is(err, ErrUnrouted) {
		t.Fatalf("IngestTo an absent shard: want ErrUnrouted, got %v", err)
	}
}

func TestWaitDispatchedReturnsOnlyAfterTheAdapterStoredTheEvent(t *testing.T) {
	f := newFaulty()
	gate := make(chan struct{})
	f.set(func(ctx context.Context, _ adapter.Batch) error {
		select {
		case <-gate:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	b := ticketBus(t, f, 7)
	tk, err := b.IngestTo(7, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.WaitDispatched(ctx, tk); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("while the adapter is blocked: want deadline, got %v", err)
	}
	if n := len(stored(t, f, 7)); n != 0 {
		t.Fatalf("%d events stored while the adapter was blocked", n)
	}
	close(gate)
	if err := b.WaitDispatched(context.Background(), tk); err != nil {
		t.Fatal(err)
	}
	if got := stored(t, f, 7); len(got) != 1 || string(got[0].Payload) != "hello" {
		t.Fatalf("stored %v, want the event", got)
	}
}

func TestWaitDispatchedReportsAGivenUpBatch(t *testing.T) {
	f := newFaulty()
	f.set(func(context.Context, adapter.Batch) error { return adapter.Fatal("disk on fire") })
	b := ticketBus(t, f, 1)
	tk, err := b.IngestTo(1, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.WaitDispatched(context.Background(), tk); !errors.Is(err, ErrNotDispatched) {
		t.Fatalf("want ErrNotDispatched, got %v", err)
	}
}

func TestIngestToRefusesEvictingModes(t *testing.T) {
	for _, bp := range []Backpressure{DropOldest(), Sample(2)} {
		b := newBus(t, newFaulty(), Config{NoBaseShards: true, Backpressure: bp})
		if err := b.AddShard(0); err != nil {
			t.Fatal(err)
		}
		if _, err := b.IngestTo(0, []byte("x")); !errors.Is(err, ErrEvictingMode) {
			t.Fatalf("%v: want ErrEvictingMode, got %v", bp, err)
		}
		_ = b.Close()
	}
}

func TestFullRingIsBackpressureForIngestTo(t *testing.T) {
	f := newFaulty()
	gate := make(chan struct{})
	f.set(func(ctx context.Context, _ adapter.Batch) error {
		select {
		case <-gate:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	b := newBus(t, f, Config{NoBaseShards: true, Backpressure: FailProducer(), RingCapacity: 2, Batch: BatchConfig{Min: 1, Max: 1, MaxDelay: time.Millisecond}})
	defer func() { close(gate); _ = b.Close() }()
	if err := b.AddShard(0); err != nil {
		t.Fatal(err)
	}
	var err error
	for range 100 { // the worker holds a few in chunks; the ring fills soon after
		if _, err = b.IngestTo(0, []byte("x")); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrBackpressure) {
		t.Fatalf("want ErrBackpressure once the ring is full, got %v", err)
	}
}

func TestConcurrentTicketsAreAllStoredInTicketOrder(t *testing.T) {
	f := newFaulty()
	b := ticketBus(t, f, 2, 5)
	const producers, each = 8, 500
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := uint16(2)
				if (p+i)%2 == 1 {
					id = 5
				}
				tk, err := b.IngestTo(id, u64(uint64(p*each+i)))
				if err == nil {
					err = b.WaitDispatched(context.Background(), tk)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, id := range []uint16{2, 5} {
		for _, e := range stored(t, f, id) {
			seen[string(e.Payload)] = true
		}
	}
	if len(seen) != producers*each {
		t.Fatalf("%d distinct events stored, want %d", len(seen), producers*each)
	}
}

func TestTicketOfARemovedShardIncarnationIsNotConfirmedByItsSuccessor(t *testing.T) {
	f := newFaulty()
	f.set(func(context.Context, adapter.Batch) error { return adapter.Fatal("refuse") })
	b := ticketBus(t, f, 4)
	tk, err := b.IngestTo(4, []byte("lost"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.RemoveShard(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
	f.set(nil)
	if err := b.AddShard(4); err != nil {
		t.Fatal(err)
	}
	tk2, err := b.IngestTo(4, []byte("fresh"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.WaitDispatched(context.Background(), tk2); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitDispatched(context.Background(), tk); !errors.Is(err, ErrNotDispatched) {
		t.Fatalf("old incarnation's refused event: want ErrNotDispatched, got %v", err)
	}
}

func TestIngestAnyPicksAnActiveShardAndConfirms(t *testing.T) {
	f := newFaulty()
	b := ticketBus(t, f, 3, 9)
	for range 50 {
		tk, err := b.IngestAny([]byte("k"))
		if err != nil {
			t.Fatal(err)
		}
		if tk.Shard != 3 && tk.Shard != 9 {
			t.Fatalf("keyless event went to shard %d", tk.Shard)
		}
		if err := b.WaitDispatched(context.Background(), tk); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(stored(t, f, 3)) + len(stored(t, f, 9)); n != 50 {
		t.Fatalf("%d events stored, want 50", n)
	}
	empty := ticketBus(t, newFaulty())
	if _, err := empty.IngestAny([]byte("x")); !errors.Is(err, ErrUnrouted) {
		t.Fatalf("no shard: want ErrUnrouted, got %v", err)
	}
}
