package bus

import (
	"context"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/adapter"
	redexadapter "github.com/purplerain/mesh-operator/engine/adapter/redex"
	store "github.com/purplerain/mesh-operator/engine/redex"
)

// discard accepts every batch: it isolates the bus's own cost (routing,
// ring, workers, batching) from any store.
type discard struct{}

func (discard) OnBatch(context.Context, adapter.Batch) error { return nil }
func (discard) PollShard(_ context.Context, _ uint16, from adapter.Position, _ int) (adapter.PollResult, error) {
	return adapter.PollResult{Next: from}, nil
}
func (discard) Flush(context.Context) error  { return nil }
func (discard) Healthy(context.Context) bool { return true }
func (discard) Close() error                 { return nil }

func benchBus(b *testing.B, a adapter.Adapter, shards int) *Bus {
	bus, err := New(a, Config{BaseShards: shards, RingCapacity: 1 << 16, Backpressure: DropOldest(),
		Batch: BatchConfig{Min: 256, Max: 4096, MaxDelay: time.Millisecond}})
	if err != nil {
		b.Fatal(err)
	}
	return bus
}

func reportDrops(b *testing.B, bus *Bus, n int) {
	bus.Flush(context.Background())
	st := bus.Stats()
	b.ReportMetric(float64(st.EventsDropped)/float64(max(n, 1)), "dropped/op")
	if err := bus.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkIngestRaw: one producer, 64-byte payloads. Target <= 100 ns/op,
// 0 allocs/op.
func BenchmarkIngestRaw(b *testing.B) {
	bus := benchBus(b, discard{}, 1)
	p := make([]byte, 64)
	b.ReportAllocs()
	b.SetBytes(64)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := bus.IngestRaw(p); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportDrops(b, bus, b.N)
}

// BenchmarkIngestBatch: one producer, batches of 1024 64-byte events.
// Target >= 10 M events/s.
func BenchmarkIngestBatch(b *testing.B) {
	for _, shards := range []int{1, 4} {
		b.Run("shards="+itoa(shards), func(b *testing.B) {
			bus := benchBus(b, discard{}, shards)
			evs := make([]Event, 1024)
			p := make([]byte, 64)
			for i := range evs {
				evs[i].Payload = p
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if _, err := bus.IngestBatch(evs); err != nil {
					b.Fatal(err)
				}
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N*len(evs))/el.Seconds(), "events/s")
			reportDrops(b, bus, b.N*len(evs))
		})
	}
}

// BenchmarkIngestBatchSustainedRedEX: batches into in-memory RedEX logs
// with FailProducer, so the producer only counts what the store keeps up
// with (end-to-end, not just admission).
func BenchmarkIngestBatchSustainedRedEX(b *testing.B) {
	a := redexadapter.New(redexadapter.Options{Log: store.Options{Retention: store.Retention{MaxEvents: 1 << 20}}})
	defer a.Close()
	bus, err := New(a, Config{BaseShards: 1, RingCapacity: 1 << 16, Backpressure: FailProducer(),
		Batch: BatchConfig{Min: 256, Max: 4096, MaxDelay: time.Millisecond}})
	if err != nil {
		b.Fatal(err)
	}
	evs := make([]Event, 1024)
	p := make([]byte, 64)
	for i := range evs {
		evs[i].Payload = p
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		rest := evs
		for len(rest) > 0 {
			rc, err := bus.IngestBatch(rest)
			rest = rest[rc.Accepted:]
			if err != nil {
				time.Sleep(20 * time.Microsecond)
			}
		}
		if i%256 == 255 { // keep memory bounded: retention runs when the owner sweeps
			l, _ := a.Log(0)
			l.Sweep(time.Now())
		}
	}
	bus.Flush(context.Background())
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N*len(evs))/el.Seconds(), "events/s")
	bus.Close()
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}
