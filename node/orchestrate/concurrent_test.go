package orchestrate

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/purplerain/mesh-operator/node/topology"
)

// TestHandoffsRunAtOnceUnderIngest moves two shards at once while the SDK
// writes: both cut over, every recorded topology changes one shard from the
// one before it (the records compose), and every acknowledged event is
// stored once.
func TestHandoffsRunAtOnceUnderIngest(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 90, 2, 0, "Leader", 10_000)
	t0 := c.bootstrap(ctx)
	cl := c.client(ctx)
	ictx, stop := context.WithCancel(ctx)
	in, wg := ingest(ictx, cl, 4)

	moves := []topology.Move{{Shard: 0, From: "a0", To: "a1"}, {Shard: 1, From: "a1", To: "a0"}, {Shard: 0, From: "a0", To: "a1"}}
	got, errs := c.driver.Handoffs(ctx, t0, moves)
	stop()
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("handoffs: %v", errs)
	}
	if !errors.Is(errs[2], ErrConflict) {
		t.Fatalf("a shard moved twice at once: %v, want ErrConflict", errs[2])
	}
	if o := ownerOf(got, 0).Owner; o != "a1" {
		t.Fatalf("shard 0 owned by %s", o)
	}
	if o := ownerOf(got, 1).Owner; o != "a0" {
		t.Fatalf("shard 1 owned by %s", o)
	}
	if got.Epoch != t0.Epoch+6 {
		t.Fatalf("epoch %d, want %d (three steps per handoff)", got.Epoch, t0.Epoch+6)
	}
	c.mu.Lock()
	records := c.records
	c.mu.Unlock()
	for i := 1; i < len(records); i++ {
		if records[i].Epoch != records[i-1].Epoch+1 {
			t.Fatalf("record %d at epoch %d after %d", i, records[i].Epoch, records[i-1].Epoch)
		}
		changed := 0
		for _, s := range records[i].Shards {
			if fmt.Sprint(s) != fmt.Sprint(ownerOf(records[i-1], s.ID)) {
				changed++
			}
		}
		if changed != 1 {
			t.Fatalf("record at epoch %d changes %d shards, want 1", records[i].Epoch, changed)
		}
	}
	for name, e := range c.statusEpochs(ctx, got) {
		if e != got.Epoch {
			t.Errorf("%s holds epoch %d, want %d", name, e, got.Epoch)
		}
	}
	n := verify(t, ctx, cl, in, c.attempts)
	t.Logf("%d events stored, %d acknowledged", n, len(in.acked))
}

// TestFailpointStopsWithoutRollback stops a handoff at each failpoint in
// turn, as a crashed operator would, and resumes it from the record each
// time: nothing is rolled back at a failpoint and the handoff completes
// once.
func TestFailpointStopsWithoutRollback(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 100, 2, 0, "Leader", 10_000)
	t0 := c.bootstrap(ctx)
	cl := c.client(ctx)
	for i := range 20 {
		if _, err := cl.Ingest(ctx, topology_keyFor(t0, 2, i)); err != nil {
			t.Fatal(err)
		}
	}
	crashed := map[string]bool{}
	c.driver.Failpoint = func(_ context.Context, step string, _ *topology.Topology) error {
		if crashed[step] {
			return nil
		}
		crashed[step] = true
		return errors.New("crash")
	}
	move := topology.Move{Shard: 2, From: "a0", To: "a1"}
	cur := t0
	var steps []string
	for range 10 {
		next, err := c.driver.Handoff(ctx, cur, move)
		cur = next
		if err == nil {
			break
		}
		if !errors.Is(err, ErrFailpoint) {
			t.Fatalf("handoff: %v", err)
		}
		if r := c.recorded(); r.Epoch != next.Epoch {
			t.Fatalf("stopped at epoch %d with %d recorded", next.Epoch, r.Epoch)
		}
		steps = append(steps, err.Error())
	}
	want := []string{StepFollowPushed, StepCaughtUp, StepFencePushed, StepFenced, StepCutoverPushed}
	for _, s := range want {
		if !crashed[s] {
			t.Errorf("never stopped at %s (stops: %v)", s, steps)
		}
	}
	if o := ownerOf(cur, 2); o.Owner != "a1" || o.Fenced {
		t.Fatalf("shard 2 after the resumed handoff: %+v", o)
	}
	// Follow, fence, cutover, each recorded once: no failpoint rolled
	// anything back.
	if cur.Epoch != t0.Epoch+3 {
		t.Fatalf("epoch %d, want %d: each step recorded once", cur.Epoch, t0.Epoch+3)
	}
}
