package bus

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/purplerain/mesh-operator/engine/bus/shard"
)

func TestIngestReturnsShardAndMonotonicTimestamp(t *testing.T) {
	b := idleBus(Config{RingCapacity: 64}, 2)
	var last uint64
	for i := 0; i < 20; i++ {
		r, err := b.IngestRaw([]byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		if r.Shard > 1 {
			t.Fatalf("receipt shard %d not an active shard", r.Shard)
		}
		if r.Timestamp < last {
			t.Fatalf("timestamp went backwards: %d after %d", r.Timestamp, last)
		}
		last = r.Timestamp
	}
}

// Release note: "TimestampGenerator uses hard-coded baseline 0".
func TestTimestampBaselineCapturedAtConstruction(t *testing.T) {
	b := idleBus(Config{}, 1)
	r, err := b.IngestRaw(nil)
	if err != nil {
		t.Fatal(err)
	}
	// Relative to a baseline taken at construction the first stamp is
	// tiny; against a zero baseline it would be the machine's uptime or
	// the Unix epoch offset.
	if time.Duration(r.Timestamp) > time.Minute {
		t.Fatalf("first timestamp %s after construction: baseline not captured", time.Duration(r.Timestamp))
	}
}

// Release note: "SdkError::Ingestion(String) flattens structured IngestionError".
func TestIngestErrorsAreTyped(t *testing.T) {
	b := idleBus(Config{RingCapacity: 2, Backpressure: FailProducer()}, 1)
	b.IngestRaw(nil)
	b.IngestRaw(nil)
	if _, err := b.IngestRaw(nil); !errors.Is(err, ErrBackpressure) {
		t.Fatalf("full ring: %v, want ErrBackpressure", err)
	}
	s := idleBus(Config{RingCapacity: 2, Backpressure: Sample(1 << 40)}, 1)
	s.IngestRaw(nil)
	s.IngestRaw(nil)
	s.IngestRaw(nil) // first pressured event is admitted
	if _, err := s.IngestRaw(nil); !errors.Is(err, ErrSampled) || errors.Is(err, ErrBackpressure) {
		t.Fatalf("sampled out: %v, want ErrSampled only", err)
	}
	u := idleBus(Config{BaseShards: 2}, 2)
	u.mgr.Drain(1)
	key := keyFor(t, 1, 2)
	if _, err := u.Ingest(Event{Key: key}); !errors.Is(err, ErrUnrouted) {
		t.Fatalf("keyed event to draining base shard: %v, want ErrUnrouted", err)
	}
	none := idleBus(Config{}, 0)
	if _, err := none.IngestRaw(nil); !errors.Is(err, ErrUnrouted) {
		t.Fatalf("no active shard: %v, want ErrUnrouted", err)
	}
	u.closing.Store(true)
	if _, err := u.IngestRaw(nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("closing bus: %v, want ErrClosed", err)
	}
	for _, s := range u.mgr.All() {
		if n := s.InFlight.Load(); n != 0 {
			t.Fatalf("refused ingest left shard %d InFlight at %d", s.ID, n)
		}
	}
}

// keyFor finds a key that hashes to base shard want of base.
func keyFor(t *testing.T, want, base int) []byte {
	for i := 0; i < 1000; i++ {
		k := []byte(fmt.Sprintf("key-%d", i))
		if shard.Pick(xxhash.Sum64(k), base) == want {
			return k
		}
	}
	t.Fatal("no key found")
	return nil
}

func fill(t *testing.T, b *Bus, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := b.IngestRaw(u64(uint64(i))); err != nil {
			t.Fatalf("fill %d: %v", i, err)
		}
	}
}

func payloads(b *Bus, id uint16) []uint64 {
	var out []uint64
	for _, ev := range ringContents(b.mgr.Get(id)) {
		var v uint64
		for _, c := range ev.Payload {
			v = v<<8 | uint64(c)
		}
		out = append(out, v)
	}
	return out
}

func TestBackpressureDropOldestEvictsOldest(t *testing.T) {
	b := idleBus(Config{RingCapacity: 4, Backpressure: DropOldest()}, 1)
	fill(t, b, 6)
	if got := fmt.Sprint(payloads(b, 0)); got != "[2 3 4 5]" {
		t.Fatalf("ring = %s, want the newest four [2 3 4 5]", got)
	}
	st := b.Stats()
	if st.EventsIngested != 6 || st.EventsDropped != 2 {
		t.Fatalf("stats = %+v, want 6 ingested 2 dropped", st)
	}
}

func TestBackpressureDropNewestRefusesNew(t *testing.T) {
	b := idleBus(Config{RingCapacity: 4, Backpressure: DropNewest()}, 1)
	fill(t, b, 4)
	for i := 4; i < 6; i++ {
		if _, err := b.IngestRaw(u64(uint64(i))); !errors.Is(err, ErrBackpressure) {
			t.Fatalf("event %d: %v, want ErrBackpressure", i, err)
		}
	}
	if got := fmt.Sprint(payloads(b, 0)); got != "[0 1 2 3]" {
		t.Fatalf("ring = %s, want the oldest four", got)
	}
	if st := b.Stats(); st.EventsDropped != 2 {
		t.Fatalf("dropped = %d, want 2", st.EventsDropped)
	}
}

func TestBackpressureFailProducerCountsNoDrop(t *testing.T) {
	b := idleBus(Config{RingCapacity: 4, Backpressure: FailProducer()}, 1)
	fill(t, b, 4)
	if _, err := b.IngestRaw(u64(9)); !errors.Is(err, ErrBackpressure) {
		t.Fatalf("%v, want ErrBackpressure", err)
	}
	if st := b.Stats(); st.EventsDropped != 0 || st.EventsIngested != 4 {
		t.Fatalf("stats = %+v: FailProducer must not count a drop", st)
	}
}

func TestBackpressureSampleAdmitsOneInN(t *testing.T) {
	b := idleBus(Config{RingCapacity: 4, Backpressure: Sample(3)}, 1)
	fill(t, b, 4)
	var admitted, sampled int
	for i := 4; i < 13; i++ { // 9 pressured events: 3 admitted
		_, err := b.IngestRaw(u64(uint64(i)))
		switch {
		case err == nil:
			admitted++
		case errors.Is(err, ErrSampled):
			sampled++
		default:
			t.Fatalf("event %d: %v", i, err)
		}
	}
	if admitted != 3 || sampled != 6 {
		t.Fatalf("admitted %d sampled %d, want 3 and 6", admitted, sampled)
	}
	if got := fmt.Sprint(payloads(b, 0)); got != "[3 4 7 10]" {
		t.Fatalf("ring = %s, want [3 4 7 10]", got)
	}
	if st := b.Stats(); st.EventsDropped != 6+3 {
		t.Fatalf("dropped = %d, want 6 sampled out + 3 evicted", st.EventsDropped)
	}
}

func TestIngestBatchGroupsPerShardContiguously(t *testing.T) {
	b := idleBus(Config{BaseShards: 2, RingCapacity: 64}, 2)
	k0, k1 := keyFor(t, 0, 2), keyFor(t, 1, 2)
	evs := []Event{
		{Key: k0, Payload: u64(0)}, {Key: k1, Payload: u64(1)}, {Key: k0, Payload: u64(2)},
		{Key: k1, Payload: u64(3)}, {Key: k0, Payload: u64(4)},
	}
	rc, err := b.IngestBatch(evs)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Accepted != 5 || rc.PerShard[0] != 3 || rc.PerShard[1] != 2 {
		t.Fatalf("receipt %+v", rc)
	}
	if got := fmt.Sprint(payloads(b, 0), payloads(b, 1)); got != "[0 2 4] [1 3]" {
		t.Fatalf("rings = %s", got)
	}
	// Keyless batches go to one shard as one run.
	rc, err = b.IngestBatch([]Event{{Payload: u64(7)}, {Payload: u64(8)}, {Payload: u64(9)}})
	if err != nil || rc.Accepted != 3 || len(rc.PerShard) != 1 {
		t.Fatalf("keyless batch: %+v %v", rc, err)
	}
	for id := range rc.PerShard {
		if got := fmt.Sprint(payloads(b, id)); got != "[7 8 9]" {
			t.Fatalf("keyless run on shard %d = %s", id, got)
		}
	}
}

func TestIngestBatchFailProducerReportsAcceptedPrefix(t *testing.T) {
	b := idleBus(Config{RingCapacity: 4, Backpressure: FailProducer()}, 1)
	evs := make([]Event, 6)
	for i := range evs {
		evs[i].Payload = u64(uint64(i))
	}
	rc, err := b.IngestBatch(evs)
	if !errors.Is(err, ErrBackpressure) || rc.Accepted != 4 {
		t.Fatalf("batch over capacity: accepted %d err %v; want 4, ErrBackpressure", rc.Accepted, err)
	}
	if got := fmt.Sprint(payloads(b, 0)); got != "[0 1 2 3]" {
		t.Fatalf("ring = %s", got)
	}
}

func TestIngestRawAvoidsFullCachedShard(t *testing.T) {
	b := idleBus(Config{RingCapacity: 2, Backpressure: FailProducer()}, 2)
	// Fill shard 0 behind the router's back; the cached candidate set
	// still lists both shards.
	s0 := b.mgr.Get(0)
	s0.Push(adapterEvent())
	s0.Push(adapterEvent())
	for i := 0; i < 2; i++ {
		r, err := b.IngestRaw(nil)
		if err != nil || r.Shard != 1 {
			t.Fatalf("ingest %d: shard %d err %v; want shard 1", i, r.Shard, err)
		}
	}
}
