package group

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/compute/daemons"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// flaky wraps a counter; instance number failInstance fails Restore while
// armed.
type flaky struct {
	compute.MeshDaemon
	instance int64
	armed    *atomic.Int64
}

func (f *flaky) Restore(b []byte) error {
	if f.armed.Load() == f.instance {
		return errors.New("injected restore failure")
	}
	return f.MeshDaemon.Restore(b)
}

func testKinds(t testing.TB) (*compute.Kinds, *atomic.Int64) {
	k := daemons.Builtins()
	var instances atomic.Int64
	armed := &atomic.Int64{}
	armed.Store(-1)
	err := k.Register("flaky", func(name string, cfg []byte) (compute.MeshDaemon, error) {
		d, err := daemons.NewCounter(name, cfg)
		if err != nil {
			return nil, err
		}
		return &flaky{MeshDaemon: d, instance: instances.Add(1) - 1, armed: armed}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return k, armed
}

func zones(n, perZone int) []Node {
	var out []Node
	for i := 0; i < n; i++ {
		out = append(out, Node{ID: fmt.Sprintf("n%d", i), Domain: fmt.Sprintf("z%d", i/perZone)})
	}
	return out
}

func evs(from, to int, rnd *rand.Rand) []compute.Event {
	var out []compute.Event
	for i := from; i < to; i++ {
		out = append(out, compute.Event{Seq: uint64(i), Payload: []byte(fmt.Sprintf(`{"key":"k%d"}`, rnd.Intn(5)))})
	}
	return out
}

func refState(t testing.TB, all []compute.Event) []byte {
	d, _ := daemons.NewCounter("d", nil)
	h := compute.NewHost("d", "counter", nil, d, compute.CursorAt(0), compute.HostConfig{})
	for _, ev := range all {
		if _, err := h.Deliver(ev); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := h.Snapshot()
	return s.State
}

func stateOf(t testing.TB, h *compute.Host) []byte {
	s, err := h.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return s.State
}

func deliver(t testing.TB, g *StandbyGroup, list []compute.Event) {
	t.Helper()
	for _, ev := range list {
		if _, err := g.Deliver(ev); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStandbyGroupNeedsTwoMembers(t *testing.T) {
	k, _ := testKinds(t)
	if _, err := NewStandbyGroup(StandbyConfig{Kind: "counter", Members: 1}, k, zones(3, 1)); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("got %v, want ErrInvalidConfig", err)
	}
}

func TestSyncStandbysRestoresEveryStandbyAndBuffersAfter(t *testing.T) {
	k, _ := testKinds(t)
	g, err := NewStandbyGroup(StandbyConfig{Name: "d", Kind: "counter", Members: 3}, k, zones(3, 1))
	if err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewSource(1))
	all := evs(0, 15, rnd)
	deliver(t, g, all[:10])
	cur, err := g.SyncStandbys()
	if err != nil || cur.Next() != 10 {
		t.Fatalf("sync = %d, %v; want through-seq 10", cur.Next(), err)
	}
	want := stateOf(t, g.ActiveHost())
	for _, m := range g.members {
		if got := stateOf(t, m.host); !bytes.Equal(got, want) || m.host.Cursor().Next() != 10 {
			t.Fatalf("member %d at %d not synced to the active", m.index, m.host.Cursor().Next())
		}
	}
	if g.Buffered() != 0 {
		t.Fatalf("buffer holds %d events after a full sync", g.Buffered())
	}
	deliver(t, g, all[10:])
	if g.Buffered() != 5 {
		t.Fatalf("buffered %d events after sync, want 5", g.Buffered())
	}
}

func TestPromotePicksHighestSyncedStandbyAndEqualsActive(t *testing.T) {
	k, armed := testKinds(t)
	g, err := NewStandbyGroup(StandbyConfig{Name: "d", Kind: "flaky", Members: 3}, k, zones(3, 1))
	if err != nil {
		t.Fatal(err)
	}
	all := evs(0, 25, rand.New(rand.NewSource(2)))
	deliver(t, g, all[:10])
	if _, err := g.SyncStandbys(); err != nil {
		t.Fatal(err)
	}
	deliver(t, g, all[10:20])
	armed.Store(2) // member 2's daemon refuses the next restore
	if _, err := g.SyncStandbys(); err == nil {
		t.Fatal("partial sync reported no error")
	}
	armed.Store(-1)
	if g.members[1].host.Cursor().Next() != 20 || g.members[2].host.Cursor().Next() != 10 {
		t.Fatalf("standbys at %d and %d, want 20 and 10", g.members[1].host.Cursor().Next(), g.members[2].host.Cursor().Next())
	}
	if g.Buffered() != 10 {
		t.Fatalf("buffered %d, want 10 (member 2 still needs 10..19)", g.Buffered())
	}
	deliver(t, g, all[20:])
	m, err := g.Promote()
	if err != nil {
		t.Fatal(err)
	}
	if m.Index != 1 || g.Term() != 2 {
		t.Fatalf("promoted member %d at term %d, want member 1 at term 2", m.Index, g.Term())
	}
	if got := stateOf(t, g.ActiveHost()); !bytes.Equal(got, refState(t, all)) {
		t.Fatal("promoted state differs from the active's")
	}
	if old := g.Members()[0]; old.Role != RoleStandby || old.Healthy {
		t.Fatalf("old active %+v, want an unhealthy standby", old)
	}
}

func TestPromoteWithoutEligibleStandbyChangesNothing(t *testing.T) {
	k, _ := testKinds(t)
	g, _ := NewStandbyGroup(StandbyConfig{Name: "d", Kind: "counter", Members: 2}, k, zones(2, 1))
	g.members[1].healthy = false
	if _, err := g.Promote(); !errors.Is(err, ErrNoHealthyMember) {
		t.Fatalf("got %v", err)
	}
	if g.Active().Index != 0 || g.Term() != 1 {
		t.Fatal("failed promote changed the active or the term")
	}
}

// Property: with random events, random sync points and random failed
// standby restores, losing the active's node promotes a standby whose state
// equals a reference run over every delivered event.
func TestPropertyPromotionEqualsReference(t *testing.T) {
	for seed := int64(0); seed < 60; seed++ {
		rnd := rand.New(rand.NewSource(seed))
		k, armed := testKinds(t)
		members := 2 + rnd.Intn(3)
		g, err := NewStandbyGroup(StandbyConfig{Name: "d", Kind: "flaky", Members: members}, k, zones(members+rnd.Intn(2), 1))
		if err != nil {
			t.Fatal(err)
		}
		n := 20 + rnd.Intn(300)
		all := evs(0, n, rnd)
		for _, ev := range all {
			if _, err := g.Deliver(ev); err != nil {
				t.Fatal(err)
			}
			if rnd.Intn(25) == 0 {
				if rnd.Intn(3) == 0 {
					armed.Store(int64(1 + rnd.Intn(members-1)))
				}
				_, _ = g.SyncStandbys() // a partial failure is part of the property
				armed.Store(-1)
			}
		}
		if err := g.OnNodeFailure(g.Active().Node); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if g.Term() != 2 {
			t.Fatalf("seed %d: term %d after losing the active", seed, g.Term())
		}
		if got := stateOf(t, g.ActiveHost()); !bytes.Equal(got, refState(t, all)) {
			t.Fatalf("seed %d: promoted state differs from the reference run", seed)
		}
		// Every healthy standby can still be promoted: what it is missing
		// is in the replay buffer.
		for _, m := range g.members {
			if m.healthy && m.role == RoleStandby && !g.eligible(m) {
				t.Fatalf("seed %d: standby %d at %d cannot be promoted (buffer starts at %d)", seed, m.index, m.host.Cursor().Next(), g.buffer[0].Seq)
			}
		}
	}
}

func TestOnNodeFailureReplacesLostStandbyOnSpareDomain(t *testing.T) {
	k, _ := testKinds(t)
	g, _ := NewStandbyGroup(StandbyConfig{Name: "d", Kind: "counter", Members: 2}, k, zones(3, 1))
	deliver(t, g, evs(0, 7, rand.New(rand.NewSource(3))))
	lost := g.Members()[1].Node
	if err := g.OnNodeFailure(lost); err != nil {
		t.Fatal(err)
	}
	m := g.Members()[1]
	if m.Node == lost || m.Node == g.Active().Node || !m.Healthy || m.Synced.Next() != 7 {
		t.Fatalf("re-placed standby %+v", m)
	}
	if g.Active().Index != 0 || g.Term() != 1 {
		t.Fatal("losing a standby changed the active")
	}
}

// Release note "on_node_recovery does not break after first matching
// partition": every member on the recovered node comes back.
func TestOnNodeRecoveryRestoresEveryMemberOnTheNode(t *testing.T) {
	k, _ := testKinds(t)
	g, err := NewStandbyGroup(StandbyConfig{Name: "d", Kind: "counter", Members: 4}, k, zones(2, 1))
	if err != nil {
		t.Fatal(err)
	}
	onN1 := 0
	for _, m := range g.Members() {
		if m.Node == "n1" {
			onN1++
		}
	}
	if onN1 != 2 {
		t.Fatalf("%d members on n1, want 2 (4 members over 2 nodes)", onN1)
	}
	deliver(t, g, evs(0, 5, rand.New(rand.NewSource(4))))
	if err := g.OnNodeFailure("n1"); err != nil {
		t.Fatal(err)
	}
	for _, m := range g.Members() {
		if m.Node == "n1" && m.Healthy {
			t.Fatalf("member %d on failed n1 still healthy (no spare node)", m.Index)
		}
	}
	deliver(t, g, evs(5, 9, rand.New(rand.NewSource(5))))
	if err := g.OnNodeRecovery("n1"); err != nil {
		t.Fatal(err)
	}
	back := 0
	for _, m := range g.Members() {
		if m.Node == "n1" && m.Healthy && m.Synced.Next() == 9 {
			back++
		}
	}
	if back != 2 {
		t.Fatalf("%d members back on n1, want both", back)
	}
}

func TestIdentitiesAreDeterministicFromSeed(t *testing.T) {
	var s1, s2 [32]byte
	s2[0] = 1
	if DeriveIdentity(s1, 3) != DeriveIdentity(s1, 3) {
		t.Fatal("same seed and index gave different identities")
	}
	if DeriveIdentity(s1, 3) == DeriveIdentity(s2, 3) || DeriveIdentity(s1, 3) == DeriveIdentity(s1, 4) {
		t.Fatal("identities collide across seeds or indices")
	}
	k, _ := testKinds(t)
	a, _ := NewReplicaGroup(ReplicaConfig{Name: "d", Kind: "counter", Replicas: 3, Seed: s1}, k, zones(3, 1))
	b, _ := NewReplicaGroup(ReplicaConfig{Name: "d", Kind: "counter", Replicas: 3, Seed: s1}, k, zones(3, 1))
	for i := range a.Replicas() {
		if a.Replicas()[i].Identity != b.Replicas()[i].Identity || a.Replicas()[i].Identity != DeriveIdentity(s1, i) {
			t.Fatalf("replica %d identity differs between groups with one seed", i)
		}
	}
}

func TestScaleToRejectsZeroAndSpreadsFailureDomains(t *testing.T) {
	k, _ := testKinds(t)
	g, err := NewReplicaGroup(ReplicaConfig{Name: "d", Kind: "counter", Replicas: 3}, k, zones(6, 2))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.ScaleTo(0); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("ScaleTo(0): %v", err)
	}
	if len(g.Replicas()) != 3 {
		t.Fatal("rejected ScaleTo changed the group")
	}
	domainOf := func(node string) string { return g.nodes.domain(node) }
	seen := map[string]int{}
	for _, r := range g.Replicas() {
		seen[domainOf(r.Node)]++
	}
	if len(seen) != 3 {
		t.Fatalf("3 replicas over domains %v, want one per zone", seen)
	}
	if err := g.ScaleTo(6); err != nil {
		t.Fatal(err)
	}
	nodes := map[string]bool{}
	seen = map[string]int{}
	for _, r := range g.Replicas() {
		nodes[r.Node] = true
		seen[domainOf(r.Node)]++
	}
	if len(nodes) != 6 || seen["z0"] != 2 || seen["z1"] != 2 || seen["z2"] != 2 {
		t.Fatalf("6 replicas on %d nodes, domains %v", len(nodes), seen)
	}
	if err := g.ScaleTo(2); err != nil {
		t.Fatal(err)
	}
	if rs := g.Replicas(); len(rs) != 2 || rs[0].Index != 0 || rs[1].Index != 1 {
		t.Fatalf("scale down kept %+v, want indices 0 and 1", rs)
	}
	// Scaling up again recreates the same identities for the same indices.
	if err := g.ScaleTo(4); err != nil {
		t.Fatal(err)
	}
	var zero [32]byte
	for _, r := range g.Replicas() {
		if r.Identity != DeriveIdentity(zero, r.Index) {
			t.Fatalf("replica %d identity changed across scale down/up", r.Index)
		}
	}
}

func TestRoundRobinAndLeastLoadRouting(t *testing.T) {
	k, _ := testKinds(t)
	g, _ := NewReplicaGroup(ReplicaConfig{Name: "d", Kind: "counter", Replicas: 3}, k, zones(3, 1))
	var order []int
	for s := 0; s < 6; s++ {
		i, _, err := g.Deliver(compute.Event{Seq: uint64(s), Key: []byte("k")})
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, i)
	}
	if fmt.Sprint(order) != "[0 1 2 0 1 2]" {
		t.Fatalf("round robin order %v", order)
	}
	ll, _ := NewReplicaGroup(ReplicaConfig{Name: "d", Kind: "counter", Replicas: 3, Strategy: LeastLoad}, k, zones(3, 1))
	for s := 0; s < 2; s++ { // load replica 0 directly
		if _, err := ll.Host(0).Deliver(compute.Event{Seq: uint64(s), Key: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if i, _ := ll.Route(nil); i != 1 {
		t.Fatalf("least load chose %d, want 1", i)
	}
	ll.Host(1).Deliver(compute.Event{Seq: 10, Key: []byte("x")})
	if i, _ := ll.Route(nil); i != 2 {
		t.Fatalf("least load chose %d, want 2", i)
	}
}

func TestConsistentHashMovesOnlyTheFailedReplicasKeys(t *testing.T) {
	k, _ := testKinds(t)
	// Three nodes only: a failed replica has no spare node and stays down.
	g, _ := NewReplicaGroup(ReplicaConfig{Name: "d", Kind: "counter", Replicas: 3, Strategy: ConsistentHash}, k, zones(3, 1))
	before := map[string]int{}
	perReplica := map[int]int{}
	for i := 0; i < 3000; i++ {
		key := fmt.Sprintf("key-%d", i)
		r, _ := g.Route([]byte(key))
		before[key] = r
		perReplica[r]++
	}
	for r := 0; r < 3; r++ {
		if perReplica[r] < 600 {
			t.Fatalf("replica %d serves %d of 3000 keys: ring badly unbalanced %v", r, perReplica[r], perReplica)
		}
	}
	failed := g.Replicas()[1].Node
	if err := g.OnNodeFailure(failed); err != nil {
		t.Fatal(err)
	}
	for key, was := range before {
		now, _ := g.Route([]byte(key))
		if was != 1 && now != was {
			t.Fatalf("key %s moved from healthy replica %d to %d", key, was, now)
		}
		if now == 1 {
			t.Fatalf("key %s routed to the failed replica", key)
		}
	}
	// Recovery respawns replica 1 with the same identity: its keys return.
	if err := g.OnNodeRecovery(failed); err != nil {
		t.Fatal(err)
	}
	for key, was := range before {
		if now, _ := g.Route([]byte(key)); now != was {
			t.Fatalf("key %s on %d after recovery, was %d", key, now, was)
		}
	}
}

func TestFailedReplicaRespawnsWithSameIdentity(t *testing.T) {
	k, _ := testKinds(t)
	g, _ := NewReplicaGroup(ReplicaConfig{Name: "d", Kind: "counter", Replicas: 2}, k, zones(3, 1))
	before := g.Replicas()[1]
	if err := g.OnNodeFailure(before.Node); err != nil {
		t.Fatal(err)
	}
	after := g.Replicas()[1]
	if after.Identity != before.Identity || after.Node == before.Node || !after.Healthy || after.Spawns != 2 {
		t.Fatalf("respawn %+v from %+v", after, before)
	}
	if after.Node == g.Replicas()[0].Node {
		t.Fatal("respawned replica shares a node with replica 0 while a node was free")
	}
}

func TestSyncEveryBoundsTheReplayBuffer(t *testing.T) {
	k, _ := testKinds(t)
	g, _ := NewStandbyGroup(StandbyConfig{Name: "d", Kind: "counter", Members: 2, SyncEvery: 4}, k, zones(2, 1))
	all := evs(0, 10, rand.New(rand.NewSource(6)))
	deliver(t, g, all)
	if g.Buffered() != 2 || g.LastSyncErr() != nil {
		t.Fatalf("buffered %d after 10 events syncing every 4, want 2 (err %v)", g.Buffered(), g.LastSyncErr())
	}
	if got := g.Members()[1].Synced.Next(); got != 8 {
		t.Fatalf("standby synced to %d, want 8", got)
	}
}
