package daemons

import (
	"fmt"
	"testing"

	"github.com/purplerain/mesh-operator/engine/compute"
)

// blob is a daemon whose state is an opaque byte slice: it isolates the
// host's snapshot/restore cost from any encoding.
type blob struct{ state []byte }

func (b *blob) Name() string                            { return "blob" }
func (b *blob) Stateful() bool                          { return true }
func (b *blob) Process(compute.Event) ([][]byte, error) { return nil, nil }
func (b *blob) Snapshot() ([]byte, error)               { return append([]byte(nil), b.state...), nil }
func (b *blob) Restore(s []byte) error                  { b.state = append(b.state[:0], s...); return nil }

// BenchmarkSnapshotRestore1MiB takes a snapshot of a 1 MiB state through
// the host, encodes it as it travels in a migration, decodes it and
// restores it into a fresh daemon.
func BenchmarkSnapshotRestore1MiB(b *testing.B) {
	run := func(b *testing.B, d compute.MeshDaemon, fresh func() compute.MeshDaemon) {
		h := compute.NewHost("d", "k", nil, d, compute.CursorAt(0), compute.HostConfig{})
		s, _ := h.Snapshot()
		b.SetBytes(int64(len(s.State)))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			s, err := h.Snapshot()
			if err != nil {
				b.Fatal(err)
			}
			dec, err := compute.DecodeSnapshot(s.Encode())
			if err != nil {
				b.Fatal(err)
			}
			if _, err := compute.RestoreHost(dec, fresh(), compute.HostConfig{}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(s.State))/(1<<20), "MiB/state")
	}
	b.Run("blob", func(b *testing.B) {
		run(b, &blob{state: make([]byte, 1<<20)}, func() compute.MeshDaemon { return &blob{} })
	})
	b.Run("counter", func(b *testing.B) {
		d, _ := NewCounter("d", nil)
		c := d.(*Counter)
		// ~29 bytes per key in the snapshot: 36k keys make 1 MiB.
		for i := 0; i < 36200; i++ {
			c.state.Counts[fmt.Sprintf("user-%020d", i)] = uint64(i)
		}
		run(b, d, func() compute.MeshDaemon { d, _ := NewCounter("d", nil); return d })
	})
}
