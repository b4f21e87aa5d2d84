package bus

import (
	"context"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/purplerain/mesh-operator/engine/adapter"
	redexadapter "github.com/purplerain/mesh-operator/engine/adapter/redex"
	"github.com/purplerain/mesh-operator/engine/bus/shard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// faulty wraps the real RedEX adapter and lets a test inject failures or
// stalls in front of it. Everything that gets through is really stored.
type faulty struct {
	*redexadapter.Adapter
	mu       sync.Mutex
	before   func(ctx context.Context, b adapter.Batch) error
	activate func(ctx context.Context, shard uint16) error
	batches  []int // sizes of batches that reached the store
	calls    int
}

func newFaulty() *faulty { return &faulty{Adapter: redexadapter.New(redexadapter.Options{})} }

func (f *faulty) OnBatch(ctx context.Context, b adapter.Batch) error {
	f.mu.Lock()
	f.calls++
	before := f.before
	f.mu.Unlock()
	if before != nil {
		if err := before(ctx, b); err != nil {
			return err
		}
	}
	if err := f.Adapter.OnBatch(ctx, b); err != nil {
		return err
	}
	f.mu.Lock()
	f.batches = append(f.batches, len(b.Events))
	f.mu.Unlock()
	return nil
}

func (f *faulty) ActivateShard(ctx context.Context, id uint16) error {
	f.mu.Lock()
	act := f.activate
	f.mu.Unlock()
	if act != nil {
		if err := act(ctx, id); err != nil {
			return err
		}
	}
	return f.Adapter.ActivateShard(ctx, id)
}

func (f *faulty) set(fn func(ctx context.Context, b adapter.Batch) error) {
	f.mu.Lock()
	f.before = fn
	f.mu.Unlock()
}

func (f *faulty) batchSizes() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.batches...)
}

// stored reads back everything in shard id.
func stored(t *testing.T, a adapter.Adapter, id uint16) []adapter.StoredEvent {
	t.Helper()
	res, err := a.PollShard(context.Background(), id, adapter.Position{}, 1<<30)
	if err != nil {
		t.Fatalf("poll shard %d: %v", id, err)
	}
	return res.Events
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func newBus(t *testing.T, a adapter.Adapter, cfg Config) *Bus {
	t.Helper()
	b, err := New(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// idleBus builds a bus whose shards have no workers, so rings fill
// deterministically. Only ingest paths may be used on it.
func idleBus(cfg Config, shards int) *Bus {
	cfg = cfg.withDefaults()
	b := &Bus{cfg: cfg, mgr: shard.NewManager(cfg.RingCapacity, cfg.MaxShards), base: time.Now()}
	for i := 0; i < shards; i++ {
		b.mgr.Add(uint16(i))
		b.mgr.Activate(uint16(i))
	}
	return b
}

func ringContents(s *shard.Shard) []adapter.Event {
	var out []adapter.Event
	for {
		ev, ok := s.Ring.TryPop()
		if !ok {
			return out
		}
		out = append(out, ev)
	}
}

// eventually polls cond until it holds or 10s pass (a liveness bound, not
// a performance assertion).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func adapterEvent() adapter.Event { return adapter.Event{} }
