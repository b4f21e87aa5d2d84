package daemons

import (
	"testing"

	"github.com/purplerain/mesh-operator/engine/compute"
)

// A window total that would overflow float64 cannot be snapshotted (JSON
// has no infinity), which would block every later snapshot, migration and
// standby sync of the daemon. Such an event is counted as malformed instead.
func TestSumOverflowingTotalKeepsDaemonSnapshottable(t *testing.T) {
	d := build(t, KindSum, `{"field":"v","window":"1m"}`)
	process(t, d,
		compute.Event{Key: []byte("k"), Payload: []byte(`{"v":1e308}`)},
		compute.Event{Key: []byte("k"), Payload: []byte(`{"v":1e308}`)},
		compute.Event{Key: []byte("k"), Payload: []byte(`{"v":-1e308}`)},
	)
	snap, err := d.Snapshot()
	if err != nil {
		t.Fatalf("snapshot after an overflowing event: %v", err)
	}
	s := d.(*Sum)
	if w, _ := s.Open("k"); w.Sum != 0 || w.Count != 2 || s.state.Malformed != 1 {
		t.Fatalf("open window %+v, malformed %d; want the overflowing event skipped and counted", w, s.state.Malformed)
	}
	r := build(t, KindSum, `{"field":"v","window":"1m"}`)
	if err := r.Restore(snap); err != nil {
		t.Fatal(err)
	}
}
