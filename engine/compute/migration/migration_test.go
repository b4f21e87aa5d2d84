package migration_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"reflect"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/compute/migration"
	"github.com/purplerain/mesh-operator/engine/compute/migration/memnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func events(from, to int, rnd *rand.Rand) []compute.Event {
	var out []compute.Event
	for i := from; i < to; i++ {
		out = append(out, compute.Event{Seq: uint64(i), Time: int64(i), Payload: payload(i, rnd)})
	}
	return out
}

func deliverAll(t testing.TB, h *compute.Host, evs []compute.Event) {
	t.Helper()
	for _, ev := range evs {
		if _, err := h.Deliver(ev); err != nil {
			t.Fatalf("deliver %d: %v", ev.Seq, err)
		}
	}
}

func TestMigrationRunsSixPhasesInOrder(t *testing.T) {
	var phases []migration.Phase
	var evs []compute.Event
	var src *compute.Host
	rnd := rand.New(rand.NewSource(1))
	all := events(0, 60, rnd)
	c := newCluster(t, migration.Config{OnPhase: func(_ string, p migration.Phase) {
		phases = append(phases, p)
		if p == migration.PhaseTransfer { // events arriving during transfer are captured
			deliverAll(t, src, all[40:60])
		}
	}}, "a", "b")
	src = c.spawn(t, "a", "c1", "counter", nil)
	deliverAll(t, src, all[:40])
	evs = all

	res, err := c.nodes["a"].migrator.Migrate(context.Background(), "c1", "b")
	if err != nil {
		t.Fatal(err)
	}
	want := []migration.Phase{migration.PhaseSnapshot, migration.PhaseTransfer, migration.PhaseRestore,
		migration.PhaseReplay, migration.PhaseCutover, migration.PhaseComplete}
	if !reflect.DeepEqual(phases, want) {
		t.Fatalf("phases %v, want %v", phases, want)
	}
	if res.Cursor.Next() != 60 || res.Replayed != 20 || res.CleanupErr != nil {
		t.Fatalf("result %+v", res)
	}
	var moved *compute.MovedError
	if _, err := c.nodes["a"].hosts.Get("c1"); !errors.As(err, &moved) || moved.Node != "b" {
		t.Fatalf("source lookup after migration: %v, want MovedError to b", err)
	}
	state, cur := stateOf(t, c, "c1")
	if !bytes.Equal(state, reference(t, "counter", nil, evs)) || cur.Next() != 60 {
		t.Fatalf("migrated state %s at %d differs from reference", state, cur.Next())
	}
	sent := c.net.Sent()
	for _, typ := range []string{"*migration.SnapshotChunk", "*migration.BufferedEvents", "*migration.Cutover",
		"*migration.Activate", "*migration.Cleanup"} {
		if sent[typ] == 0 {
			t.Errorf("no %s sent (sent %v)", typ, sent)
		}
	}
	if _, ok := c.nodes["b"].target.Phase("c1"); ok {
		t.Error("target kept its migration record after Cleanup")
	}
}

func TestSnapshotChunksAreAtMost7000Bytes(t *testing.T) {
	c := newCluster(t, migration.Config{}, "a", "b")
	var sizes []int
	var total uint32
	c.net.SetFault(func(_, _ migration.NodeID, m migration.Message) memnet.Fault {
		if ch, ok := m.(*migration.SnapshotChunk); ok {
			sizes = append(sizes, len(ch.Data))
			total = ch.Total
		}
		return memnet.Deliver
	})
	h := c.spawn(t, "a", "c1", "counter", nil)
	var evs []compute.Event
	for i := 0; i < 5000; i++ {
		evs = append(evs, compute.Event{Seq: uint64(i), Payload: []byte(fmt.Sprintf(`{"key":"key-%06d"}`, i))})
	}
	deliverAll(t, h, evs)
	snap, _ := h.Snapshot()
	encoded := len(snap.Encode())
	if _, err := c.nodes["a"].migrator.Migrate(context.Background(), "c1", "b"); err != nil {
		t.Fatal(err)
	}
	wantChunks := (encoded + migration.MaxChunk - 1) / migration.MaxChunk
	if len(sizes) != wantChunks || int(total) != wantChunks || wantChunks < 2 {
		t.Fatalf("%d chunks (total field %d) for %d bytes, want %d", len(sizes), total, encoded, wantChunks)
	}
	sum := 0
	for _, s := range sizes {
		if s > migration.MaxChunk {
			t.Fatalf("chunk of %d bytes exceeds %d", s, migration.MaxChunk)
		}
		sum += s
	}
	if sum != encoded {
		t.Fatalf("chunks carry %d bytes, snapshot is %d", sum, encoded)
	}
	state, _ := stateOf(t, c, "c1")
	if !bytes.Equal(state, reference(t, "counter", nil, evs)) {
		t.Fatal("state differs after chunked transfer")
	}
}

func TestOnlyNotReadyIsRetriable(t *testing.T) {
	for r := migration.ReasonNotReady; r <= migration.ReasonAborted; r++ {
		if got, want := r.Retriable(), r == migration.ReasonNotReady; got != want {
			t.Errorf("%s.Retriable() = %v", r, got)
		}
	}
}

func TestNotReadyTargetIsRetriedUntilReady(t *testing.T) {
	var c *cluster
	retries := 0
	c = newCluster(t, migration.Config{NotReadyRetries: 3, Backoff: func(n int) time.Duration {
		retries = n
		if n == 2 {
			c.nodes["b"].target.SetReady(true)
		}
		return 0
	}}, "a", "b")
	c.nodes["b"].target.SetReady(false)
	h := c.spawn(t, "a", "c1", "counter", nil)
	deliverAll(t, h, events(0, 5, rand.New(rand.NewSource(2))))
	if _, err := c.nodes["a"].migrator.Migrate(context.Background(), "c1", "b"); err != nil {
		t.Fatal(err)
	}
	if retries != 2 {
		t.Fatalf("retried %d times, want 2", retries)
	}
}

// failureCase injects one fault and names the phase and reason it must
// surface with.
type failureCase struct {
	name   string
	setup  func(c *cluster)
	phase  migration.Phase
	reason migration.Reason
}

func dropOnce(c *cluster, match func(migration.Message) bool, f memnet.Fault) {
	fired := false
	c.net.SetFault(func(_, _ migration.NodeID, m migration.Message) memnet.Fault {
		if !fired && match(m) {
			fired = true
			return f
		}
		return memnet.Deliver
	})
}

func isType[T migration.Message](m migration.Message) bool { _, ok := m.(T); return ok }

var failureCases = []failureCase{
	{"snapshot fails on source", func(c *cluster) { c.nodes["a"].plan.failSnapshot = true },
		migration.PhaseSnapshot, migration.ReasonStateFailed},
	{"chunk lost in transfer", func(c *cluster) {
		dropOnce(c, func(m migration.Message) bool {
			ch, ok := m.(*migration.SnapshotChunk)
			return ok && ch.Index == 0 && ch.Total > 1
		}, memnet.DropRequest)
	}, migration.PhaseTransfer, migration.ReasonTransportFailed},
	{"restore fails on target", func(c *cluster) { c.nodes["b"].plan.failRestore = true },
		migration.PhaseRestore, migration.ReasonStateFailed},
	{"factory missing on target", func(c *cluster) {
		c.nodes["b"].target = migration.NewTarget(compute.NewKinds(), c.nodes["b"].hosts, compute.HostConfig{})
		c.nodes["b"].target.SetReady(true)
		c.net.Register("b", &migration.Node{Target: c.nodes["b"].target, Migrator: c.nodes["b"].migrator})
	}, migration.PhaseRestore, migration.ReasonFactoryNotFound},
	{"target runs no compute", func(c *cluster) {
		c.net.Register("b", &migration.Node{Target: migration.NewTarget(nil, c.nodes["b"].hosts, compute.HostConfig{})})
	}, migration.PhaseTransfer, migration.ReasonComputeNotSupported},
	{"target never ready", func(c *cluster) { c.nodes["b"].target.SetReady(false) },
		migration.PhaseTransfer, migration.ReasonNotReadyTimeout},
	{"buffered events lost", func(c *cluster) { dropOnce(c, isType[*migration.BufferedEvents], memnet.DropRequest) },
		migration.PhaseReplay, migration.ReasonTransportFailed},
	{"replay delivery keeps failing", func(c *cluster) {
		c.nodes["b"].plan.stuck = map[uint64]bool{42: true} // fails more often than ReplayRetries
	}, migration.PhaseReplay, migration.ReasonStateFailed},
	{"cutover lost", func(c *cluster) { dropOnce(c, isType[*migration.Cutover], memnet.DropRequest) },
		migration.PhaseCutover, migration.ReasonTransportFailed},
	{"activate lost", func(c *cluster) { dropOnce(c, isType[*migration.Activate], memnet.DropRequest) },
		migration.PhaseCutover, migration.ReasonTransportFailed},
	{"activate ack lost after the target activated", func(c *cluster) { dropOnce(c, isType[*migration.Activate], memnet.DropReply) },
		migration.PhaseCutover, migration.ReasonTransportFailed},
	{"target already hosts the daemon", func(c *cluster) { c.spawn(nil, "b", "c1", "counter", nil) },
		migration.PhaseTransfer, migration.ReasonAlreadyMigrating},
}

// Every failure reason and a failure in every phase: the migration fails
// with that phase and reason, the source stays authoritative (unfenced,
// still hosting, nothing on the target), later events keep flowing, and a
// retried migration reaches the never-migrated reference state.
func TestAbortAtAnyPhaseLeavesSourceAuthoritative(t *testing.T) {
	for _, tc := range failureCases {
		t.Run(tc.name, func(t *testing.T) {
			rnd := rand.New(rand.NewSource(7))
			all := events(0, 120, rnd)
			var src *compute.Host
			c := newCluster(t, migration.Config{ChunkSize: 16, NotReadyRetries: 2, OnPhase: func(_ string, p migration.Phase) {
				if p == migration.PhaseTransfer && src.Cursor().Next() == 40 {
					deliverAll(t, src, all[40:80]) // captured during transfer
				}
			}}, "a", "b")
			src = c.spawn(t, "a", "c1", "counter", nil)
			deliverAll(t, src, all[:40])
			tc.setup(c)
			_, err := c.nodes["a"].migrator.Migrate(context.Background(), "c1", "b")
			var me *migration.Error
			if !errors.As(err, &me) {
				t.Fatalf("got %v, want *migration.Error", err)
			}
			if me.Phase != tc.phase || me.Reason != tc.reason {
				t.Fatalf("failed in %s with %s, want %s with %s (%v)", me.Phase, me.Reason, tc.phase, tc.reason, err)
			}
			if tc.name == "target already hosts the daemon" {
				return // two copies were set up by the test itself
			}
			if owners := c.owners("c1"); len(owners) != 1 || owners[0] != "a" {
				t.Fatalf("owners after abort %v, want [a]", owners)
			}
			if src.Fenced() {
				t.Fatal("source left fenced after abort")
			}
			if _, ok := c.nodes["b"].target.Phase("c1"); ok {
				t.Fatal("target kept a migration record after abort")
			}
			deliverAll(t, src, all[src.Cursor().Next():100])

			// Clear the faults and retry: the migration now succeeds.
			c.net.SetFault(nil)
			nb := c.nodes["b"]
			nb.plan.mu.Lock()
			nb.plan.failSeq = map[uint64]bool{}
			nb.plan.stuck = nil
			nb.plan.mu.Unlock()
			nb.target = migration.NewTarget(nb.kinds, nb.hosts, compute.HostConfig{})
			nb.target.SetReady(true)
			c.net.Register("b", &migration.Node{Target: nb.target, Migrator: nb.migrator})
			if _, err := c.nodes["a"].migrator.Migrate(context.Background(), "c1", "b"); err != nil {
				t.Fatalf("retry: %v", err)
			}
			r := &router{c: c, at: "a"}
			for _, ev := range all[100:] {
				if err := r.deliver(context.Background(), "c1", ev); err != nil {
					t.Fatal(err)
				}
			}
			state, cur := stateOf(t, c, "c1")
			if cur.Next() != 120 || !bytes.Equal(state, reference(t, "counter", nil, all)) {
				t.Fatalf("final state at %d differs from reference", cur.Next())
			}
		})
	}
}

func TestSecondMigrationOfSameDaemonIsAlreadyMigrating(t *testing.T) {
	var c *cluster
	var inner error
	c = newCluster(t, migration.Config{OnPhase: func(_ string, p migration.Phase) {
		if p == migration.PhaseTransfer && inner == nil {
			_, inner = c.nodes["a"].migrator.Migrate(context.Background(), "c1", "b")
		}
	}}, "a", "b")
	c.spawn(t, "a", "c1", "counter", nil)
	if _, err := c.nodes["a"].migrator.Migrate(context.Background(), "c1", "b"); err != nil {
		t.Fatal(err)
	}
	var me *migration.Error
	if !errors.As(inner, &me) || me.Reason != migration.ReasonAlreadyMigrating {
		t.Fatalf("concurrent migration: %v, want AlreadyMigrating", inner)
	}
}

func TestTakeSnapshotMessageStartsMigrationOnSource(t *testing.T) {
	c := newCluster(t, migration.Config{}, "a", "b", "operator")
	h := c.spawn(t, "a", "c1", "counter", nil)
	deliverAll(t, h, events(0, 10, rand.New(rand.NewSource(3))))
	req, _ := migration.Encode(&migration.TakeSnapshot{Daemon: "c1", Target: "b"})
	raw, err := c.net.Transport("operator").Exchange(context.Background(), "a", req)
	if err != nil {
		t.Fatal(err)
	}
	reply, err := migration.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if ack, ok := reply.(*migration.ActivateAck); !ok || ack.Next != 10 {
		t.Fatalf("reply %#v, want ActivateAck at 10", reply)
	}
	if owners := c.owners("c1"); len(owners) != 1 || owners[0] != "b" {
		t.Fatalf("owners %v", owners)
	}
}

func TestMigrationNextSeqOverflowSaturatesOnTarget(t *testing.T) {
	c := newCluster(t, migration.Config{}, "a", "b")
	nd := c.nodes["a"]
	d, _ := nd.kinds.New("chain", "c1", nil)
	h := compute.NewHost("c1", "chain", nil, d, compute.CursorAt(math.MaxUint64-1), compute.HostConfig{})
	if err := nd.hosts.Add(h); err != nil {
		t.Fatal(err)
	}
	deliverAll(t, h, []compute.Event{{Seq: math.MaxUint64 - 1}, {Seq: math.MaxUint64}})
	res, err := nd.migrator.Migrate(context.Background(), "c1", "b")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Cursor.Exhausted() || res.Cursor.Next() != math.MaxUint64 {
		t.Fatalf("cursor %+v, want saturated", res.Cursor)
	}
	th, _ := c.nodes["b"].hosts.Get("c1")
	if _, err := th.Deliver(compute.Event{Seq: 0}); !errors.Is(err, compute.ErrDuplicate) {
		t.Fatalf("seq 0 after max: %v, want refused (no wrap)", err)
	}
}

type stateless struct{ n int }

func (s *stateless) Name() string                            { return "stateless" }
func (s *stateless) Stateful() bool                          { return false }
func (s *stateless) Process(compute.Event) ([][]byte, error) { s.n++; return nil, nil }
func (s *stateless) Snapshot() ([]byte, error) {
	return nil, errors.New("stateless daemon snapshotted")
}
func (s *stateless) Restore([]byte) error { return errors.New("stateless daemon restored") }

func TestStatelessDaemonMigratesByCursorOnly(t *testing.T) {
	c := newCluster(t, migration.Config{}, "a", "b")
	for _, n := range c.nodes {
		if err := n.kinds.Register("stateless", func(string, []byte) (compute.MeshDaemon, error) { return &stateless{}, nil }); err != nil {
			t.Fatal(err)
		}
	}
	h := c.spawn(t, "a", "s1", "stateless", nil)
	deliverAll(t, h, events(0, 12, rand.New(rand.NewSource(9))))
	res, err := c.nodes["a"].migrator.Migrate(context.Background(), "s1", "b")
	if err != nil {
		t.Fatal(err)
	}
	th, err := c.nodes["b"].hosts.Get("s1")
	if err != nil || res.Cursor.Next() != 12 || th.Cursor().Next() != 12 {
		t.Fatalf("stateless migration: %v, cursor %d", err, res.Cursor.Next())
	}
}

func TestCancelledMigrationLeavesSourceAuthoritative(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCluster(t, migration.Config{ChunkSize: 16}, "a", "b")
	c.net.SetFault(func(_, _ migration.NodeID, m migration.Message) memnet.Fault {
		if ch, ok := m.(*migration.SnapshotChunk); ok && ch.Index == 1 {
			cancel() // chunks 0 and 1 arrive; the migration is cancelled mid-transfer
		}
		return memnet.Deliver
	})
	h := c.spawn(t, "a", "c1", "counter", nil)
	deliverAll(t, h, events(0, 10, rand.New(rand.NewSource(10))))
	_, err := c.nodes["a"].migrator.Migrate(ctx, "c1", "b")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want an error wrapping context.Canceled", err)
	}
	if owners := c.owners("c1"); len(owners) != 1 || owners[0] != "a" || h.Fenced() {
		t.Fatalf("owners %v fenced=%v after cancel", owners, h.Fenced())
	}
	if c.net.Sent()["*migration.SnapshotChunk"] != 2 || c.net.Sent()["*migration.Failed"] != 1 {
		t.Fatalf("sent %v, want 2 chunks then the abort", c.net.Sent())
	}
	if _, ok := c.nodes["b"].target.Phase("c1"); ok {
		t.Fatal("target kept a record: the abort must be sent even after cancellation")
	}
}

// An abort whose Failed message is lost after the target activated leaves a
// stale copy there; the source's retry replaces it, and no other node can.
func TestRetryReplacesStaleActivatedCopyFromSameSourceOnly(t *testing.T) {
	c := newCluster(t, migration.Config{}, "a", "b", "x")
	h := c.spawn(t, "a", "c1", "counter", nil)
	deliverAll(t, h, events(0, 10, rand.New(rand.NewSource(11))))
	acked := false
	c.net.SetFault(func(_, _ migration.NodeID, m migration.Message) memnet.Fault {
		switch m.(type) {
		case *migration.Activate:
			if !acked {
				acked = true
				return memnet.DropReply // the target activates; the source never hears
			}
		case *migration.Failed:
			return memnet.DropRequest // and the abort is lost too
		}
		return memnet.Deliver
	})
	if _, err := c.nodes["a"].migrator.Migrate(context.Background(), "c1", "b"); err == nil {
		t.Fatal("migration with a lost ack succeeded")
	}
	if _, err := c.nodes["b"].hosts.Get("c1"); err != nil {
		t.Fatalf("expected the stale activated copy on b: %v", err)
	}
	// Another node cannot overwrite it.
	snap := &compute.Snapshot{Daemon: "c1", Kind: "counter", State: []byte{}}
	reply := c.nodes["b"].target.HandleChunk("x", &migration.SnapshotChunk{Daemon: "c1", Total: 1, Data: snap.Encode()})
	if f, ok := reply.(*migration.Failed); !ok || f.Reason != migration.ReasonAlreadyMigrating {
		t.Fatalf("chunk from another node: %#v, want AlreadyMigrating", reply)
	}
	// The source (authoritative after its abort) keeps going and retries.
	deliverAll(t, h, events(10, 15, rand.New(rand.NewSource(12))))
	c.net.SetFault(nil)
	if _, err := c.nodes["a"].migrator.Migrate(context.Background(), "c1", "b"); err != nil {
		t.Fatalf("retry: %v", err)
	}
	state, cur := stateOf(t, c, "c1")
	all := append(events(0, 10, rand.New(rand.NewSource(11))), events(10, 15, rand.New(rand.NewSource(12)))...)
	if cur.Next() != 15 || !bytes.Equal(state, reference(t, "counter", nil, all)) {
		t.Fatalf("state at %d after replacing the stale copy differs from reference", cur.Next())
	}
}

func TestFailedSnapshotDoesNotEndSomeoneElsesCapture(t *testing.T) {
	c := newCluster(t, migration.Config{}, "a", "b")
	h := c.spawn(t, "a", "c1", "counter", nil)
	_, capture, err := h.BeginCapture()
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.nodes["a"].migrator.Migrate(context.Background(), "c1", "b")
	var me *migration.Error
	if !errors.As(err, &me) || me.Phase != migration.PhaseSnapshot || !errors.Is(err, compute.ErrCapturing) {
		t.Fatalf("got %v, want a Snapshot-phase failure wrapping ErrCapturing", err)
	}
	deliverAll(t, h, events(0, 3, rand.New(rand.NewSource(13))))
	if capture.Len() != 3 {
		t.Fatalf("the other capture holds %d events, want 3: the failed migration ended it", capture.Len())
	}
}
