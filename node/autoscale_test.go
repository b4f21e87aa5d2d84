package node

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/topology"
)

// withAdded is twoNodes plus added shard 2 owned by a.
func withAdded(epoch uint64, draining bool) *topology.Topology {
	t := twoNodes(epoch)
	t.LeaseMillis = 60_000
	t.Shards = append(t.Shards, topology.Shard{ID: 2, Owner: "a", Draining: draining})
	return t
}

func ingestKeyless(t *testing.T, n *Node, count int) map[uint16]int {
	t.Helper()
	perShard := map[uint16]int{}
	for i := range count {
		acks, err := n.Ingest(context.Background(), []dataapi.Event{{Payload: fmt.Appendf(nil, "e%d", i)}})
		if err != nil {
			t.Fatalf("ingest %d: %v", i, err)
		}
		perShard[acks[0].Shard]++
	}
	return perShard
}

func shardStatus(n *Node, id uint16) (ShardStatus, bool) {
	for _, s := range n.ShardStatuses() {
		if s.ID == id {
			return s, true
		}
	}
	return ShardStatus{}, false
}

// An added shard is served like a base one and its load is measured; once
// draining it takes no new keyless event but stays owned and readable;
// removed from the topology, it is no longer owned.
func TestAddedShardServedMeasuredDrainedRemoved(t *testing.T) {
	n, err := New(Options{Name: "a"}) // real clock: the sampler measures rates
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	if err := n.ApplyTopology(withAdded(1, false)); err != nil {
		t.Fatal(err)
	}
	var spread map[uint16]int
	deadline := time.Now().Add(10 * time.Second)
	for {
		spread = ingestKeyless(t, n, 50)
		s, _ := shardStatus(n, 2)
		if s.Load != nil && s.Load.EventRate > 0 && spread[2] > 0 {
			if s.Load.FillRatio < 0 || s.Load.FillRatio > 1 || s.Load.Samples < 2 {
				t.Fatalf("implausible load %+v", *s.Load)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no event rate measured on added shard 2: %+v (spread %v)", s, spread)
		}
		time.Sleep(20 * time.Millisecond)
	}
	before, _ := shardStatus(n, 2)

	if err := n.ApplyTopology(withAdded(2, true)); err != nil {
		t.Fatal(err)
	}
	if got := ingestKeyless(t, n, 200); got[2] != 0 || got[0] != 200 {
		t.Fatalf("keyless events after the drain went to %v, want all 200 on shard 0 (a's only routable shard)", got)
	}
	after, ok := shardStatus(n, 2)
	if !ok || after.Role != "owner" || !after.Draining || after.Next != before.Next {
		t.Fatalf("draining shard 2: %+v (next before %d)", after, before.Next)
	}
	if err := n.CheckWritable(2); err != nil {
		t.Fatalf("a draining shard still acknowledges what was appended before: %v", err)
	}
	resp, err := n.Poll(context.Background(), dataapi.PollRequest{Limit: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	read := 0
	for _, e := range resp.Events {
		if e.Shard == 2 {
			read++
		}
	}
	if uint64(read) != after.Next-after.First {
		t.Fatalf("read %d events of draining shard 2, its log holds %d", read, after.Next-after.First)
	}

	gone := withAdded(3, true)
	gone.Shards = gone.Shards[:2]
	if err := n.ApplyTopology(gone); err != nil {
		t.Fatal(err)
	}
	if _, ok := shardStatus(n, 2); ok {
		t.Fatal("a removed shard is still reported")
	}
}

// The load window spans loadWindow, and the derived signals are what
// their definitions say: mean occupancy over the ring, appended events
// per second, and Little's law for the ring wait.
func TestShardLoadFromSamples(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var w []loadSample
	// 20 samples 100 ms apart: 10 events appended per sample (100/s), the
	// ring holding 0 and 50 events alternately (mean 25).
	for i := range 20 {
		w = appendLoadSample(w, loadSample{at: t0.Add(time.Duration(i) * loadSampleInterval), occupancy: 50 * (i % 2), next: uint64(10 * i)})
	}
	if span := w[len(w)-1].at.Sub(w[0].at); span != loadWindow || len(w) != 11 {
		t.Fatalf("window spans %s with %d samples, want %s and 11", span, len(w), loadWindow)
	}
	ls := loadSampler{shards: map[uint16][]loadSample{3: w}}
	l := ls.load(3)
	if l == nil {
		t.Fatal("no load for a sampled shard")
	}
	meanOcc := 0.0
	for _, s := range w {
		meanOcc += float64(s.occupancy)
	}
	meanOcc /= float64(len(w))
	if math.Abs(l.EventRate-100) > 1e-9 {
		t.Fatalf("event rate %.3f/s, want 100/s", l.EventRate)
	}
	if want := meanOcc / busRingCapacity; math.Abs(l.FillRatio-want) > 1e-12 {
		t.Fatalf("fill ratio %g, want %g", l.FillRatio, want)
	}
	if want := int64(meanOcc / 100 * 1e6); l.PushLatencyMicros != want {
		t.Fatalf("push latency %dµs, want %dµs (mean occupancy / rate)", l.PushLatencyMicros, want)
	}
	// Nothing appended: no rate, no latency, whatever the ring held.
	idle := loadSampler{shards: map[uint16][]loadSample{1: {{at: t0, occupancy: 7, next: 5}, {at: t0.Add(time.Second), occupancy: 7, next: 5}}}}
	if l := idle.load(1); l.EventRate != 0 || l.PushLatencyMicros != 0 {
		t.Fatalf("idle shard load %+v, want no rate and no latency", *l)
	}
	if ls.load(9) != nil {
		t.Fatal("a shard never sampled has a load")
	}
}

// Load is measured on the real clock, whatever the lease clock says: a
// node whose lease clock stands still (tests set it by hand, without
// synchronisation) still reports an event rate, and its sample window
// stays one loadWindow long instead of growing with every sample taken
// at the same instant.
func TestShardLoadIgnoresTheLeaseClock(t *testing.T) {
	n, clock := newNode(t, "a") // a frozen lease clock
	top := withAdded(1, false)
	if err := n.ApplyTopology(top); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ingestKeyless(t, n, 50)
		s, _ := shardStatus(n, 0)
		if l := s.Load; l != nil && l.EventRate > 0 && l.Samples >= 3 {
			if max := int(loadWindow/loadSampleInterval) + 2; l.Samples > max {
				t.Fatalf("window holds %d samples, want at most %d", l.Samples, max)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no event rate measured with a frozen lease clock: %+v", s.Load)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The lease clock is the test's to set while the sampler runs (the
	// race detector would see the sampler read it).
	clock.advance(time.Millisecond)
	time.Sleep(2 * loadSampleInterval)
	clock.advance(time.Millisecond)
}

// Flush latency is the mean of the bus's batch times over the samples that
// saw the shard dispatch since the one before: an idle shard's last batch
// time, which the bus keeps, is not counted again, and a sample the bus did
// not answer is skipped.
func TestShardFlushLatencyCountsFreshBatchesOnly(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * loadSampleInterval) }
	busy := []loadSample{
		{at: at(0), timed: true, processed: 10, flush: 900 * time.Millisecond}, // before the window's first step: not counted
		{at: at(1), timed: true, processed: 20, flush: 100 * time.Millisecond},
		{at: at(2), timed: true, processed: 20, flush: 100 * time.Millisecond}, // nothing dispatched since
		{at: at(3)}, // the bus was busy with a topology change
		{at: at(4), timed: true, processed: 30, flush: 300 * time.Millisecond},
	}
	ls := loadSampler{shards: map[uint16][]loadSample{0: busy}}
	if got := ls.load(0).FlushLatencyMicros; got != (200 * time.Millisecond).Microseconds() {
		t.Fatalf("flush latency %dµs, want the mean of the two fresh batch times, 200000µs", got)
	}
	idle := loadSampler{shards: map[uint16][]loadSample{0: {
		{at: at(0), timed: true, processed: 10, flush: time.Second},
		{at: at(1), timed: true, processed: 10, flush: time.Second},
	}}}
	if got := idle.load(0).FlushLatencyMicros; got != 0 {
		t.Fatalf("idle shard reports a flush latency of %dµs from its last batch, want 0", got)
	}
}

// The node samples the bus's timings of the shards it owns.
func TestLoadSamplerReadsTheBusTimings(t *testing.T) {
	n, _ := newNode(t, "a")
	if err := n.ApplyTopology(withAdded(1, false)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ingestKeyless(t, n, 50)
		n.load.mu.Lock()
		processed := uint64(0)
		for _, w := range n.load.shards {
			for _, s := range w {
				if s.timed {
					processed = max(processed, s.processed)
				}
			}
		}
		n.load.mu.Unlock()
		if processed > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no sample carries the bus's timings of a shard that dispatched")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
