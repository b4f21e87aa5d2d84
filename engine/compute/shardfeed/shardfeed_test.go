package shardfeed

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"go.uber.org/goleak"

	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/compute/daemons"
	"github.com/purplerain/mesh-operator/engine/cortex"
	"github.com/purplerain/mesh-operator/engine/redex"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openLog(t *testing.T, n int) *redex.Log {
	t.Helper()
	l, err := redex.Open(redex.Options{Name: "shard-0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	for i := 0; i < n; i++ {
		if _, err := l.Append([]byte(fmt.Sprintf(`{"key":"k%d"}`, i%3))); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func counterHost(t *testing.T, start compute.Cursor, every uint64) (*compute.Host, *daemons.Counter) {
	d, err := daemons.NewCounter("c", nil)
	if err != nil {
		t.Fatal(err)
	}
	return compute.NewHost("c", daemons.KindCounter, nil, d, start, compute.HostConfig{SnapshotEvery: every}), d.(*daemons.Counter)
}

func TestFeedFromRedexThroughCortexTracksThroughSeqAndSnapshots(t *testing.T) {
	l := openLog(t, 9)
	h, c := counterHost(t, compute.CursorAt(0), 4)
	drv, err := Start(l, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	if _, err := l.Append([]byte(`{"key":"k0"}`)); err != nil { // live entry seq 9
		t.Fatal(err)
	}
	if err := drv.WaitForSeq(context.Background(), 9); err != nil {
		t.Fatal(err)
	}
	if h.Cursor().Next() != 10 || h.SnapshotsTaken() != 2 {
		t.Fatalf("cursor %d, snapshots %d; want 10 and 2", h.Cursor().Next(), h.SnapshotsTaken())
	}
	drv.Close()
	if c.Count("k0") != 4 || c.Count("k1") != 3 || c.Count("k2") != 3 {
		t.Fatalf("counts k0=%d k1=%d k2=%d", c.Count("k0"), c.Count("k1"), c.Count("k2"))
	}
}

func TestFeedResumesRestoredHostAtItsCursor(t *testing.T) {
	l := openLog(t, 12)
	h, _ := counterHost(t, compute.CursorAt(0), 0)
	drv, err := Start(l, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := drv.WaitForSeq(context.Background(), 11); err != nil {
		t.Fatal(err)
	}
	drv.Close()
	want, _ := h.Snapshot()

	// A host restored from a mid-log snapshot catches up without re-applying.
	mid, _ := counterHost(t, compute.CursorAt(0), 0)
	for s := uint64(0); s < 5; s++ {
		e, _ := l.Get(s)
		if _, err := mid.Deliver(compute.Event{Seq: s, Payload: e.Payload}); err != nil {
			t.Fatal(err)
		}
	}
	snap, _ := mid.Snapshot()
	d2, _ := daemons.NewCounter("c", nil)
	restored, err := compute.RestoreHost(snap, d2, compute.HostConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var applied []uint64
	drv2, err := Start(l, restored, func(seq uint64, _ [][]byte) { applied = append(applied, seq) })
	if err != nil {
		t.Fatal(err)
	}
	if err := drv2.WaitForSeq(context.Background(), 11); err != nil {
		t.Fatal(err)
	}
	drv2.Close()
	got, _ := restored.Snapshot()
	if string(got.State) != string(want.State) {
		t.Fatalf("resumed state %s, want %s", got.State, want.State)
	}
	if len(applied) != 7 || applied[0] != 5 {
		t.Fatalf("applied seqs %v, want 5..11", applied)
	}
}

type failing struct {
	compute.MeshDaemon
	failAt uint64
	armed  bool
}

func (f *failing) Process(ev compute.Event) ([][]byte, error) {
	if f.armed && ev.Seq == f.failAt {
		return nil, errors.New("injected")
	}
	return f.MeshDaemon.Process(ev)
}

func TestDaemonErrorHaltsFeedAndRestartResumesAtFailedEntry(t *testing.T) {
	l := openLog(t, 6)
	inner, _ := daemons.NewCounter("c", nil)
	f := &failing{MeshDaemon: inner, failAt: 3, armed: true}
	h := compute.NewHost("c", "counter", nil, f, compute.CursorAt(0), compute.HostConfig{})
	drv, err := Start(l, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = drv.WaitForSeq(context.Background(), 5)
	var fe *cortex.FoldError
	if !errors.As(err, &fe) || fe.Seq != 3 || drv.IsRunning() {
		t.Fatalf("got %v running=%v; want halt at seq 3", err, drv.IsRunning())
	}
	drv.Close()
	if h.Cursor().Next() != 3 {
		t.Fatalf("cursor %d after halt, want 3", h.Cursor().Next())
	}
	f.armed = false
	drv, err = Start(l, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	if err := drv.WaitForSeq(context.Background(), 5); err != nil {
		t.Fatal(err)
	}
	if h.Processed() != 6 {
		t.Fatalf("processed %d, want 6 (no entry twice)", h.Processed())
	}
}

func TestFencedHostHaltsFeedAndRestartResumes(t *testing.T) {
	l := openLog(t, 4)
	h, c := counterHost(t, compute.CursorAt(0), 0)
	drv, err := Start(l, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := drv.WaitForSeq(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
	h.Fence()
	if _, err := l.Append([]byte(`{"key":"k1"}`)); err != nil {
		t.Fatal(err)
	}
	if err := drv.WaitForSeq(context.Background(), 4); !errors.Is(err, compute.ErrFenced) {
		t.Fatalf("got %v, want the feed halted with ErrFenced", err)
	}
	drv.Close()
	h.Unfence() // the migration aborted: the source resumes
	drv, err = Start(l, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	if err := drv.WaitForSeq(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
	if h.Processed() != 5 || c.Count("k1") != 2 {
		t.Fatalf("processed %d, k1=%d; want 5 and 2", h.Processed(), c.Count("k1"))
	}
}
