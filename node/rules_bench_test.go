package node

import (
	"context"
	"fmt"
	"testing"

	"github.com/purplerain/mesh-operator/node/dataapi"
)

// BenchmarkIngestRules measures acknowledged ingest through the node (route,
// rules, node bus, shard log) in batches of 100 events, with no rules and
// with 10 rules, for the ratio in docs/benchmarks.md.
func BenchmarkIngestRules(b *testing.B) {
	ten := "["
	for i := range 10 {
		if i > 0 {
			ten += ","
		}
		switch i % 3 {
		case 0:
			ten += fmt.Sprintf(`{"name":"r%d","require":{"field":"speed","op":"le","value":%d}}`, i, 1000+i)
		case 1:
			ten += fmt.Sprintf(`{"name":"r%d","require":{"field":"kind","op":"in","values":["telemetry","log"]}}`, i)
		default:
			ten += fmt.Sprintf(`{"name":"r%d","when":{"field":"kind","op":"eq","value":"telemetry"},"require":{"field":"device.id","op":"exists"}}`, i)
		}
	}
	ten += "]"
	payload := []byte(`{"kind":"telemetry","speed":120,"ts":1732579200123456789,"device":{"id":"veh-0042","fw":"1.2.3"}}`)
	batch := make([]dataapi.Event, 100)
	for i := range batch {
		batch[i] = dataapi.Event{Payload: payload}
	}
	for _, tc := range []struct {
		name, rules string
	}{{"rules=0", ""}, {"rules=10", ten}} {
		b.Run(tc.name, func(b *testing.B) {
			n, err := New(Options{Name: "a"})
			if err != nil {
				b.Fatal(err)
			}
			defer n.Close()
			if tc.rules != "" {
				n.SetRules(mustRules(b, tc.rules))
			}
			if err := n.ApplyTopology(soleOwner(1)); err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.SetBytes(int64(len(payload) * len(batch)))
			for b.Loop() {
				if _, err := n.Ingest(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "events/s")
		})
	}
}
