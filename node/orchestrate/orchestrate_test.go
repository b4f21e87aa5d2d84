package orchestrate

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/node/topology"
)

// TestHandoffUnderIngestLosesNothing moves a shard between two running
// nodes while the SDK keeps writing, and checks the three recorded epochs
// (follow, fence, cutover) and that every acknowledged event is stored once.
func TestHandoffUnderIngestLosesNothing(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 10, 2, 0, "Leader", 10_000)
	t0 := c.bootstrap(ctx)
	cl := c.client(ctx)
	ictx, stop := context.WithCancel(ctx)
	in, wg := ingest(ictx, cl, 4)
	time.Sleep(200 * time.Millisecond)

	move := topology.Move{Shard: 0, From: "a0", To: "a1"}
	got, err := c.driver.Handoff(ctx, t0, move)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	stop()
	wg.Wait()

	if got.Epoch != t0.Epoch+3 {
		t.Fatalf("epoch %d, want %d (follow, fence, cutover)", got.Epoch, t0.Epoch+3)
	}
	s := ownerOf(got, 0)
	if s.Owner != "a1" || s.Fenced || !slices.Contains(s.Followers, "a0") {
		t.Fatalf("shard 0 after handoff: %+v", s)
	}
	c.mu.Lock()
	steps := c.records[1:]
	c.mu.Unlock()
	if len(steps) != 3 || !slices.Contains(ownerOf(steps[0], 0).Followers, "a1") || !ownerOf(steps[1], 0).Fenced || ownerOf(steps[1], 0).Owner != "a0" {
		t.Fatalf("recorded steps do not follow, fence, cut over: %+v", steps)
	}
	for name, e := range c.statusEpochs(ctx, got) {
		if e != got.Epoch {
			t.Errorf("%s holds epoch %d, want %d", name, e, got.Epoch)
		}
	}
	n := verify(t, ctx, cl, in, c.attempts)
	t.Logf("%d events stored, %d acknowledged", n, len(in.acked))

	// Repeating the finished handoff changes nothing.
	again, err := c.driver.Handoff(ctx, got, move)
	if err != nil || again.Epoch != got.Epoch {
		t.Fatalf("repeat: epoch %d, %v", again.Epoch, err)
	}
}

// TestHandoffResumesFromRecordedFence is a restarted driver looking at a
// recorded fenced topology: it continues with the catch-up and cutover.
func TestHandoffResumesFromRecordedFence(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 20, 2, 0, "Leader", 10_000)
	t0 := c.bootstrap(ctx)
	cl := c.client(ctx)
	for i := range 50 {
		if _, err := cl.Ingest(ctx, topology_keyFor(t0, 1, i)); err != nil {
			t.Fatal(err)
		}
	}
	// What a driver that stopped after step 2 left behind.
	fenced := withShard(withShard(t0, 1, func(s *topology.Shard) { s.Followers = append(s.Followers, "a0") }), 1,
		func(s *topology.Shard) { s.Fenced = true })
	if err := c.driver.recordAndPush(ctx, fenced, "a0", "a1"); err != nil {
		t.Fatal(err)
	}
	got, err := c.driver.Handoff(ctx, fenced, topology.Move{Shard: 1, From: "a1", To: "a0"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Epoch != fenced.Epoch+1 || ownerOf(got, 1).Owner != "a0" || ownerOf(got, 1).Fenced {
		t.Fatalf("resumed handoff: %+v", got)
	}
	st, err := c.driver.status(ctx, got, "a0")
	if err != nil {
		t.Fatal(err)
	}
	if next, _, _, _, ok := shardStatus(st, 1, "owner"); !ok || next != 50 {
		t.Fatalf("new owner's shard 1 next %d (owned %v), want 50", next, ok)
	}
}

// TestHandoffAbortAtFenceLeavesOldOwner fails the new owner right after
// the fence is recorded: the driver must record and push a topology in
// which the old owner owns the shard unfenced, and the old owner must
// accept writes again with its log intact.
func TestHandoffAbortAtFenceLeavesOldOwner(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 30, 2, 0, "Leader", 10_000)
	c.driver.StepTimeout = time.Second
	t0 := c.bootstrap(ctx)
	cl := c.client(ctx)
	for i := range 20 {
		if _, err := cl.Ingest(ctx, topology_keyFor(t0, 0, i)); err != nil {
			t.Fatal(err)
		}
	}
	c.onRecord = func(t *topology.Topology) {
		if s, _ := t.Shard(0); s.Fenced {
			go c.stop("a1")
		}
	}
	got, err := c.driver.Handoff(ctx, t0, topology.Move{Shard: 0, From: "a0", To: "a1"})
	if !errors.Is(err, ErrAborted) {
		t.Fatalf("want ErrAborted, got %v", err)
	}
	s := ownerOf(got, 0)
	if s.Owner != "a0" || s.Fenced || got.Epoch != t0.Epoch+3 {
		t.Fatalf("after abort: epoch %d shard %+v", got.Epoch, s)
	}
	if r := c.recorded(); r.Epoch != got.Epoch {
		t.Fatalf("abort topology not recorded: %d vs %d", r.Epoch, got.Epoch)
	}
	// The old owner takes writes again and kept everything.
	if _, err := cl.Ingest(ctx, topology_keyFor(t0, 0, 99)); err != nil {
		t.Fatal(err)
	}
	st, err := c.driver.status(ctx, got, "a0")
	if err != nil {
		t.Fatal(err)
	}
	if next, _, _, fenced, ok := shardStatus(st, 0, "owner"); !ok || fenced || next != 21 || st.Epoch != got.Epoch {
		t.Fatalf("old owner: next %d fenced %v owner %v epoch %d", next, fenced, ok, st.Epoch)
	}
}

// TestHandoffCancelledStillAborts ends the caller's context right after
// the fence is recorded: the abort still goes out, on a context of its own.
func TestHandoffCancelledStillAborts(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 40, 2, 0, "Leader", 10_000)
	t0 := c.bootstrap(ctx)
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.onRecord = func(t *topology.Topology) {
		if s, _ := t.Shard(0); s.Fenced {
			cancel()
		}
	}
	got, err := c.driver.Handoff(hctx, t0, topology.Move{Shard: 0, From: "a0", To: "a1"})
	if !errors.Is(err, ErrAborted) || !errors.Is(err, context.Canceled) {
		t.Fatalf("want ErrAborted wrapping the cancellation, got %v", err)
	}
	if s := ownerOf(got, 0); s.Owner != "a0" || s.Fenced {
		t.Fatalf("after abort: %+v", s)
	}
	for name, e := range c.statusEpochs(ctx, got) {
		if e != got.Epoch {
			t.Errorf("%s holds epoch %d, want the abort's %d", name, e, got.Epoch)
		}
	}
}

// TestRecordFailureNothingPushed: the operator could not persist the
// topology, so no node may see it.
func TestRecordFailureNothingPushed(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 50, 2, 0, "Leader", 10_000)
	t0 := c.bootstrap(ctx)
	c.driver.Record = func(*topology.Topology) error { return errors.New("status write conflict") }
	_, err := c.driver.Handoff(ctx, t0, topology.Move{Shard: 0, From: "a0", To: "a1"})
	if err == nil {
		t.Fatal("handoff succeeded without a record")
	}
	for name, e := range c.statusEpochs(ctx, t0) {
		if e != t0.Epoch {
			t.Errorf("%s holds epoch %d, want %d (nothing pushed)", name, e, t0.Epoch)
		}
	}
}

// TestPromoteWaitsOutLeaseAndLosesNothing stops an owner under ackPolicy
// Standby and promotes the standby: not before the lease ran out, with
// every acknowledged event on the new owner.
func TestPromoteWaitsOutLeaseAndLosesNothing(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 60, 2, 1, "Standby", 900)
	t0 := c.bootstrap(ctx)
	var failed atomicName
	rctx, stopRenew := context.WithCancel(ctx)
	rwg := c.renew(rctx, func(n string) bool { return n == failed.get() })
	defer func() { stopRenew(); rwg.Wait() }()

	cl := c.client(ctx)
	ictx, stop := context.WithCancel(ctx)
	in, wg := ingest(ictx, cl, 4)
	time.Sleep(300 * time.Millisecond)

	failed.set("a0")
	lastPush := time.Now() // the renewer may have pushed just before
	c.stop("a0")
	start := time.Now()
	got, err := c.driver.Promote(ctx, c.recorded(), "a0", lastPush)
	if err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < t0.Lease()-50*time.Millisecond {
		t.Fatalf("promoted after %v, before the lease of %v ran out", waited, t0.Lease())
	}
	for _, id := range t0.OwnedBy("a0") {
		s := ownerOf(got, id)
		if s.Owner != "s0" || !slices.Contains(s.Followers, "a0") {
			t.Fatalf("shard %d after promotion: %+v", id, s)
		}
	}
	for _, id := range t0.OwnedBy("a1") {
		if s := ownerOf(got, id); !slices.Contains(s.Followers, "a0") || !slices.Contains(s.Followers, "s0") {
			t.Fatalf("shard %d of a1 after promotion: %+v, want followers s0 (still) and a0", id, s)
		}
	}
	if m, _ := got.Member("a0"); m.Role != topology.Standby {
		t.Fatalf("failed owner's role %q, want standby", m.Role)
	}
	if m, _ := got.Member("s0"); m.Role != topology.Active {
		t.Fatalf("promoted standby's role %q, want active", m.Role)
	}
	// The failed node comes back as a standby and catches up, so writes
	// under ackPolicy Standby find a follower again.
	c.start("a0")
	failed.set("")
	if err := c.driver.Push(ctx, got, "a0"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	stop()
	wg.Wait()
	n := verify(t, ctx, cl, in, c.attempts)
	t.Logf("%d events stored, %d acknowledged", n, len(in.acked))

	// Repeating is a push, not a second promotion.
	again, err := c.driver.Promote(ctx, got, "a0", time.Now())
	if err != nil || again.Epoch != got.Epoch {
		t.Fatalf("repeat: epoch %d, %v", again.Epoch, err)
	}
}

// TestPromoteWithoutReachableFollower refuses rather than inventing an
// owner.
func TestPromoteWithoutReachableFollower(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 70, 1, 1, "Leader", 300)
	t0 := c.bootstrap(ctx)
	c.stop("a0")
	c.stop("s0")
	got, err := c.driver.Promote(ctx, t0, "a0", time.Now())
	if !errors.Is(err, ErrNoCandidate) || got.Epoch != t0.Epoch {
		t.Fatalf("want ErrNoCandidate at the same epoch, got epoch %d %v", got.Epoch, err)
	}
}

// TestDrainMovesEveryShardOff drains one of three actives under ingest.
func TestDrainMovesEveryShardOff(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 80, 3, 0, "Leader", 10_000)
	t0 := c.bootstrap(ctx)
	cl := c.client(ctx)
	ictx, stop := context.WithCancel(ctx)
	in, wg := ingest(ictx, cl, 4)
	time.Sleep(200 * time.Millisecond)
	got, err := c.driver.Drain(ctx, t0, "a0")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	stop()
	wg.Wait()
	if owned := got.OwnedBy("a0"); len(owned) != 0 {
		t.Fatalf("a0 still owns %v", owned)
	}
	if a, b := len(got.OwnedBy("a1")), len(got.OwnedBy("a2")); a != 2 || b != 2 {
		t.Fatalf("after drain a1 owns %d, a2 owns %d; want 2 and 2", a, b)
	}
	verify(t, ctx, cl, in, c.attempts)
}
