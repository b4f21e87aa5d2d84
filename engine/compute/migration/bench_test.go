package migration_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/compute/migration"
)

func counterEvents(from, to int) []compute.Event {
	out := make([]compute.Event, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, compute.Event{Seq: uint64(i), Payload: []byte(fmt.Sprintf(`{"key":"k%d"}`, i%1000))})
	}
	return out
}

// BenchmarkMigration100kBuffered migrates a counter daemon while 100k
// events arrive during the transfer: they are captured on the source,
// sent in BufferedEvents batches over the in-process transport (encoded
// and copied) and replayed on the target. The source's own processing of
// the 100k events is excluded from the timing.
func BenchmarkMigration100kBuffered(b *testing.B) {
	const buffered = 100_000
	evs := counterEvents(0, 1000+buffered)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		var src *compute.Host
		c := newCluster(b, migration.Config{CatchUpRounds: 1, OnPhase: func(_ string, p migration.Phase) {
			if p == migration.PhaseTransfer {
				b.StopTimer()
				deliverAll(b, src, evs[1000:])
				b.StartTimer()
			}
		}}, "a", "b")
		src = c.spawn(b, "a", "d", "counter", nil)
		deliverAll(b, src, evs[:1000])
		b.StartTimer()
		res, err := c.nodes["a"].migrator.Migrate(context.Background(), "d", "b")
		if err != nil {
			b.Fatal(err)
		}
		if res.Replayed != buffered {
			b.Fatalf("replayed %d, want %d", res.Replayed, buffered)
		}
	}
	b.ReportMetric(float64(buffered)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

type noop struct{}

func (noop) Name() string                            { return "noop" }
func (noop) Stateful() bool                          { return true }
func (noop) Process(compute.Event) ([][]byte, error) { return nil, nil }
func (noop) Snapshot() ([]byte, error)               { return []byte{}, nil }
func (noop) Restore([]byte) error                    { return nil }

// BenchmarkReplay measures the target's replay rate: buffered events in
// batches of 1024 through Target.HandleEvents (pending set, in-order
// drain, host delivery). One op is one event.
func BenchmarkReplay(b *testing.B) {
	for _, kind := range []string{"noop", "counter"} {
		b.Run(kind, func(b *testing.B) {
			k := compute.NewKinds()
			_ = k.Register("noop", func(string, []byte) (compute.MeshDaemon, error) { return noop{}, nil })
			_ = k.Register("counter", func(n string, c []byte) (compute.MeshDaemon, error) {
				return kinds(b, &plan{}).New("counter", n, c)
			})
			tg := migration.NewTarget(k, compute.NewHosts(), compute.HostConfig{})
			tg.SetReady(true)
			fresh, err := k.New(kind, "d", nil)
			if err != nil {
				b.Fatal(err)
			}
			state, _ := fresh.Snapshot()
			snap := &compute.Snapshot{Daemon: "d", Kind: kind, State: state}
			if _, ok := tg.HandleChunk("a", &migration.SnapshotChunk{Daemon: "d", Total: 1, Data: snap.Encode()}).(*migration.RestoreComplete); !ok {
				b.Fatal("restore failed")
			}
			evs := counterEvents(0, b.N)
			b.ResetTimer()
			for i := 0; i < len(evs); i += 1024 {
				reply := tg.HandleEvents(&migration.BufferedEvents{Daemon: "d", Events: evs[i:min(i+1024, len(evs))]})
				if _, ok := reply.(*migration.ReplayComplete); !ok {
					b.Fatalf("replay: %#v", reply)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
