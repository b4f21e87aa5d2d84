package bus

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/adapter"
	"github.com/purplerain/mesh-operator/engine/bus/shard"
)

// Release note: "flush() baseline excludes events flushed via
// remove_shard_internal" — stranded events are dispatched and counted.
func TestRemoveShardFlushesStrandedEvents(t *testing.T) {
	f := newFaulty()
	defer f.Close()
	b := newBus(t, f, Config{BaseShards: 1})
	defer b.Close()
	id, err := b.ScaleUp()
	if err != nil || id != 1 {
		t.Fatalf("ScaleUp = %d, %v", id, err)
	}
	b.hookWorkersStopped = func(id uint16) {
		// A producer that picked the shard before it drained pushes now,
		// after the workers are gone.
		s := b.mgr.Get(id)
		s.Push(adapter.Event{Payload: []byte("late-1")})
		s.Push(adapter.Event{Payload: []byte("late-2")})
	}
	if err := b.ScaleDown(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	got := stored(t, f, 1)
	if len(got) != 2 || string(got[0].Payload) != "late-1" || string(got[1].Payload) != "late-2" {
		t.Fatalf("stranded events not flushed: %v", got)
	}
	if st := b.Stats(); st.EventsDispatched != 2 || st.EventsIngested != 2 || st.EventsDropped != 0 {
		t.Fatalf("stats %+v: stranded flush must count as dispatched", st)
	}
	if _, ok := b.ShardState(1); ok {
		t.Fatal("shard 1 still present after ScaleDown")
	}
}

func TestScaleDownRefusesBaseShard(t *testing.T) {
	f := newFaulty()
	defer f.Close()
	b := newBus(t, f, Config{BaseShards: 2})
	defer b.Close()
	if err := b.ScaleDown(context.Background(), 1); !errors.Is(err, shard.ErrState) {
		t.Fatalf("ScaleDown(base) = %v", err)
	}
}

// Sequential manual scale-downs each remove only their own shard.
func TestSequentialScaleDownKeepsSiblings(t *testing.T) {
	f := newFaulty()
	defer f.Close()
	b := newBus(t, f, Config{BaseShards: 1})
	defer b.Close()
	for i := 0; i < 3; i++ {
		if _, err := b.ScaleUp(); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.ScaleDown(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	if err := b.ScaleDown(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if ids := b.Shards(); len(ids) != 2 || ids[0] != 0 || ids[1] != 3 {
		t.Fatalf("shards = %v, want [0 3]", ids)
	}
	if b.ActiveShards() != 2 {
		t.Fatalf("active = %d, want 2", b.ActiveShards())
	}
}

// Release note: "Activation-failure abort drops drain-worker scratch buffer /
// Batch worker abort drops in-memory current_batch".
func TestActivationAbortAwaitsWorkerBatch(t *testing.T) {
	f := newFaulty()
	defer f.Close()
	b := newBus(t, f, Config{BaseShards: 1, AdapterTimeout: time.Second,
		Batch: BatchConfig{Min: 1000, Max: 1000, MaxDelay: time.Hour}})
	defer b.Close()
	f.activate = func(_ context.Context, id uint16) error {
		if id != 5 {
			return nil
		}
		// Events reach the provisioning shard's worker, which holds them
		// in a partial batch (MaxDelay is an hour)...
		s := b.mgr.Get(id)
		for i := 0; i < 3; i++ {
			s.Push(adapter.Event{Payload: u64(uint64(i))})
		}
		w := b.workers[id]
		eventually(t, "worker to hold the events", func() bool { return w.held.Load() == 3 })
		// ...and then activation fails.
		return errors.New("stream create failed")
	}
	if err := b.AddShard(5); err == nil {
		t.Fatal("AddShard succeeded despite activation failure")
	}
	if got := len(stored(t, f, 5)); got != 3 {
		t.Fatalf("abort dispatched %d of the worker's 3 events", got)
	}
	st := b.Stats()
	if st.ShutdownWasLossy || st.EventsDropped != 0 || st.EventsDispatched != 3 {
		t.Fatalf("stats %+v", st)
	}
	if b.ActiveShards() != 1 {
		t.Fatalf("active = %d after rollback, want 1", b.ActiveShards())
	}
}

func TestActivationAbortTimeoutOnParkedWorker(t *testing.T) {
	f := newFaulty()
	defer f.Close()
	release := make(chan struct{})
	var parked atomic.Bool
	f.set(func(ctx context.Context, bt adapter.Batch) error {
		if bt.Shard == 5 {
			parked.Store(true)
			<-release // ignores ctx: a stuck store
		}
		return nil
	})
	b := newBus(t, f, Config{BaseShards: 1, AdapterTimeout: 20 * time.Millisecond,
		Batch: BatchConfig{Min: 1, MaxDelay: time.Millisecond}})
	f.activate = func(_ context.Context, id uint16) error {
		if id != 5 {
			return nil
		}
		b.mgr.Get(id).Push(adapter.Event{})
		eventually(t, "worker parked in OnBatch", parked.Load)
		return errors.New("activation failed")
	}
	start := time.Now()
	if err := b.AddShard(5); err == nil {
		t.Fatal("AddShard succeeded")
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("abort hung for %s on a parked worker", waited)
	}
	if st := b.Stats(); !st.ShutdownWasLossy || st.EventsDropped != 1 {
		t.Fatalf("stats %+v: a parked abort must report its loss", st)
	}
	close(release)
	b.Close()
}

// Release note: "shutdown() returns Ok(()) after timeout-with-drops".
func TestShutdownWasLossyReported(t *testing.T) {
	f := newFaulty()
	defer f.Close()
	release := make(chan struct{})
	f.set(func(context.Context, adapter.Batch) error { <-release; return nil })
	b := newBus(t, f, Config{ShutdownTimeout: 50 * time.Millisecond, AdapterTimeout: 20 * time.Millisecond,
		Batch: BatchConfig{Min: 1, MaxDelay: time.Millisecond}})
	for i := 0; i < 10; i++ {
		b.IngestRaw(nil)
	}
	done := make(chan error)
	go func() { done <- b.Close() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("Close hung past its deadline")
	}
	close(release)
	if !errors.Is(err, ErrLossyShutdown) {
		t.Fatalf("Close = %v, want ErrLossyShutdown", err)
	}
	st := b.Stats()
	if !st.ShutdownWasLossy || st.EventsDropped == 0 {
		t.Fatalf("stats %+v: lossy shutdown not reported", st)
	}
	if st.EventsDispatched+st.EventsDropped < 10 {
		t.Fatalf("stats %+v: %d events unaccounted", st, 10-st.EventsDispatched-st.EventsDropped)
	}
}

// Release note: "Shutdown drain race past in_flight_ingests". Producers
// race Close: every ingest that returned success must be stored, and every
// other must have been refused with ErrClosed.
func TestShutdownDrainNoAcceptedEventLost(t *testing.T) {
	f := newFaulty()
	defer f.Close()
	b := newBus(t, f, Config{BaseShards: 2, RingCapacity: 1 << 14, Backpressure: FailProducer()})
	var accepted atomic.Uint64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for p := 0; p < 4; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for {
				_, err := b.IngestRaw([]byte("e"))
				switch {
				case err == nil:
					accepted.Add(1)
				case errors.Is(err, ErrClosed):
					return
				case errors.Is(err, ErrBackpressure):
				default:
					t.Error(err)
					return
				}
			}
		}()
	}
	close(start)
	time.Sleep(5 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	n := uint64(len(stored(t, f, 0)) + len(stored(t, f, 1)))
	if n != accepted.Load() || n == 0 {
		t.Fatalf("stored %d, accepted %d", n, accepted.Load())
	}
	if st := b.Stats(); st.ShutdownWasLossy || st.EventsDispatched != n {
		t.Fatalf("stats %+v", st)
	}
}

func TestFlushWaitsForDispatch(t *testing.T) {
	f := newFaulty()
	defer f.Close()
	var slow atomic.Bool
	slow.Store(true)
	f.set(func(context.Context, adapter.Batch) error {
		if slow.Load() {
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	})
	b := newBus(t, f, Config{Batch: BatchConfig{Min: 1, Max: 4, MaxDelay: time.Millisecond}})
	defer b.Close()
	for i := 0; i < 20; i++ {
		b.IngestRaw(u64(uint64(i)))
	}
	if err := b.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := len(stored(t, f, 0)); got != 20 {
		t.Fatalf("after Flush %d of 20 events stored", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.IngestRaw(nil)
	b.IngestRaw(nil)
	_ = b.Flush(ctx) // may or may not be done; must not hang
}

func TestScalingMonitorScalesUpAndDownWithInjectedClock(t *testing.T) {
	f := newFaulty()
	defer f.Close()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	p := shard.Policy{MinShards: 1, MaxShards: 2, FlushLatencyThreshold: time.Nanosecond,
		UnderutilizedThreshold: 0.5, ScaleDownDelay: time.Minute, MetricsWindow: time.Second, MaxSamples: 4}
	b := newBus(t, f, Config{BaseShards: 1, Scaling: &p, MonitorInterval: time.Hour, Now: clock,
		Batch: BatchConfig{Min: 1, MaxDelay: time.Millisecond}})
	defer b.Close()
	b.IngestRaw(nil)
	b.Flush(context.Background()) // records a flush latency > 1ns
	d, err := b.EvaluateScaling(context.Background())
	if err != nil || d.Action != shard.ScaleUp || b.ActiveShards() != 2 {
		t.Fatalf("decision %+v err %v active %d; want ScaleUp to 2", d, err, b.ActiveShards())
	}
	// Now only idleness matters: shard 1 is removable, shard 0 is base.
	p.FlushLatencyThreshold = 0
	for _, step := range []time.Duration{0, 30 * time.Second, 29 * time.Second} {
		advance(step)
		d, _ = b.EvaluateScaling(context.Background())
		if d.Action != shard.None {
			t.Fatalf("after %s idle: %+v, want None (delay is 1m)", step, d)
		}
	}
	advance(time.Second)
	d, err = b.EvaluateScaling(context.Background())
	if err != nil || d.Action != shard.ScaleDown || d.Shard != 1 || b.ActiveShards() != 1 {
		t.Fatalf("decision %+v err %v active %d; want ScaleDown of shard 1", d, err, b.ActiveShards())
	}
}

// A producer that routed to a shard from a stale table and pushes while the
// shard is being removed: RemoveShard waits for it (InFlight), so the event
// is flushed as stranded instead of landing in a ring nobody reads.
func TestRemoveShardWaitsForInFlightProducer(t *testing.T) {
	f := newFaulty()
	defer f.Close()
	b := newBus(t, f, Config{BaseShards: 1})
	defer b.Close()
	id, _ := b.ScaleUp()
	s := b.mgr.Get(id)
	if err := b.acquire(s); err != nil { // producer has picked the shard...
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- b.ScaleDown(context.Background(), id) }()
	eventually(t, "shard to stop", func() bool { return s.State() == shard.Stopped })
	select {
	case err := <-done:
		t.Fatalf("RemoveShard returned (%v) while a producer was in flight", err)
	case <-time.After(20 * time.Millisecond):
	}
	s.Push(adapter.Event{Payload: []byte("in-flight")}) // ...and pushes now
	release(s)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := stored(t, f, id); len(got) != 1 || string(got[0].Payload) != "in-flight" {
		t.Fatalf("in-flight push lost: %v", got)
	}
	if err := b.acquire(s); err != errStopped {
		t.Fatalf("acquire on a removed shard = %v, want errStopped", err)
	}
}
