package bus

import (
	"context"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/adapter"
)

// ShardTiming reports the last batch's dispatch time (at least the stall
// the adapter added to it) and how many events the shard processed, so a
// sampler can tell a fresh flush time from an idle shard's old one; a
// shard the bus does not hold reports nothing.
func TestShardTimingReportsTheLastFlushAndProgress(t *testing.T) {
	f := newFaulty()
	defer f.Close()
	b := newBus(t, f, Config{BaseShards: 1, Batch: BatchConfig{Min: 1, Max: 16, MaxDelay: time.Millisecond}})
	defer b.Close()

	if tm, ok := b.ShardTiming(0); !ok || tm.Processed != 0 || tm.Flush != 0 {
		t.Fatalf("before any event: %+v ok %v, want zero timings for a held shard", tm, ok)
	}
	if _, ok := b.ShardTiming(7); ok {
		t.Fatal("a shard the bus does not hold reports timings")
	}

	const stall = 50 * time.Millisecond
	f.set(func(context.Context, adapter.Batch) error { time.Sleep(stall); return nil })
	b.IngestRaw([]byte("slow"))
	eventually(t, "the event to be dispatched", func() bool { return b.Stats().EventsDispatched == 1 })
	tm, ok := b.ShardTiming(0)
	if !ok || tm.Processed != 1 || tm.Flush < stall {
		t.Fatalf("after a stalled batch: %+v ok %v, want 1 processed and a flush of at least %s", tm, ok, stall)
	}
	// Idle: the flush time stays, the progress count tells it is old.
	again, _ := b.ShardTiming(0)
	if again != tm {
		t.Fatalf("idle shard's timings changed: %+v then %+v", tm, again)
	}
	if err := b.RemoveShard(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.ShardTiming(0); ok {
		t.Fatal("a removed shard reports timings")
	}
}
