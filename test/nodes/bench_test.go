package nodes

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/client"
	"github.com/purplerain/mesh-operator/node/topology"
)

// BenchmarkHandoffPreloadedShard measures a handoff of one shard that
// already holds MESH_HANDOFF_MIB MiB (default 64) of 1 KiB events, with no
// other writes: the time is dominated by the new owner's backfill before
// the fence. One op is one handoff; the shard moves back and forth.
func BenchmarkHandoffPreloadedShard(b *testing.B) {
	mib := 64
	if v, err := strconv.Atoi(os.Getenv("MESH_HANDOFF_MIB")); err == nil && v > 0 {
		mib = v
	}
	ctx := context.Background()
	// No daemons: the benchmark measures the log handoff alone.
	c := newClusterWith(b, 170, "Leader", nil)
	c.bootstrap()
	cl := c.client(ctx)
	shard := c.ownedBy("a0")[0]
	payload := make([]byte, 1024)
	batch := make([]client.Event, 512)
	events := mib * 1024
	for sent := 0; sent < events; sent += len(batch) {
		for i := range batch {
			batch[i] = client.Event{Key: keyFor(shard, sent+i), Payload: payload}
		}
		if _, err := cl.Ingest(ctx, batch...); err != nil {
			b.Fatal(err)
		}
	}
	from, to := "a0", "a1"
	b.ResetTimer()
	var total time.Duration
	for range b.N {
		start := time.Now()
		if _, err := c.driver.Handoff(ctx, c.recorded(), topology.Move{Shard: shard, From: from, To: to}); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		from, to = to, from
	}
	b.StopTimer()
	perOp := total / time.Duration(b.N)
	b.ReportMetric(float64(mib)/perOp.Seconds(), "MiB/s")
	b.Logf("TIMING handoff of a %d MiB shard (%d events): %v per handoff", mib, events, perOp.Round(time.Millisecond))
}
