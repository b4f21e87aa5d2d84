package node

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/purplerain/mesh-operator/engine/identity"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/topology"
)

// TestOldOwnerFollowingTheNewOwnerDropsItsUnreplicatedWrites: b (Disk
// mode, daemons snapshotting often) follows a; a failover makes b the
// owner with no follower (ackPolicy Leader), and b acknowledges writes a
// never gets; ownership goes back to a, which writes other entries at the
// same seqs; b follows a again. b's log is ahead of a's, so a resyncs it:
// afterwards b holds exactly a's log, every daemon copy on b equals the
// fold of a's history (not b's), and so does it after b restarts from its
// stored snapshots; replication goes on live.
func TestOldOwnerFollowingTheNewOwnerDropsItsUnreplicatedWrites(t *testing.T) {
	old := daemonSnapshotEvery
	daemonSnapshotEvery = 4 // b's stored snapshots cover its own writes
	t.Cleanup(func() { daemonSnapshotEvery = old })
	ck, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	a, err := New(Options{Name: "a", ClusterKey: ck, Logger: log, Config: &nodeconfig.Config{
		Storage: nodeconfig.Storage{Mode: "Memory", Fsync: "Never"},
		Daemons: testDecls,
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() }) // after the replication server stops (a cleanup registered later)
	srv, addr := serveReplication(t, a, ck, a.ClusterKey, "127.0.30.40")

	topo := func(epoch uint64, owner string, followers ...string) *topology.Topology {
		return &topology.Topology{
			Cluster: "demo", Epoch: epoch, LeaseMillis: 600_000, BaseShards: 2,
			Members: []topology.Member{
				{Name: "a", Role: topology.Active, Data: "127.0.30.40:1", Wire: addr},
				{Name: "b", Role: topology.Active, Data: "127.0.30.41:1", Wire: "127.0.30.41:2"},
			},
			Shards: []topology.Shard{{ID: 0, Owner: owner, Followers: followers}, {ID: 1, Owner: owner, Followers: followers}},
		}
	}
	dir := t.TempDir()
	openB := func() *Node {
		t.Helper()
		n, err := New(Options{Name: "b", ClusterKey: ck, Logger: log, Config: &nodeconfig.Config{
			Storage: nodeconfig.Storage{Mode: "Disk", Dir: dir, Fsync: "Never"},
			Daemons: testDecls,
		}})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	apply := func(tp *topology.Topology, ns ...*Node) {
		t.Helper()
		for _, n := range ns {
			if err := n.ApplyTopology(tp); err != nil {
				t.Fatal(err)
			}
		}
	}
	i := 0
	ingest := func(n *Node, tp *topology.Topology, perShard int) {
		t.Helper()
		ingestRounds(t, n, tp, perShard, &i)
	}
	caughtUp := func(b *Node) {
		t.Helper()
		waitCaughtUp(t, a, b, "b")
	}
	// matchesA checks b holds exactly a's entries and daemon states that
	// fold a's whole history.
	matchesA := func(b *Node) {
		t.Helper()
		for _, shard := range []uint16{0, 1} {
			ol, _ := a.Log(shard)
			fl, _ := b.Log(shard)
			want, _ := ol.Read(0, int(ol.NextSeq())+1)
			got, _ := fl.Read(fl.FirstSeq(), int(fl.Len())+1)
			if fl.FirstSeq() != 0 || len(got) != len(want) {
				t.Fatalf("shard %d: b holds %d entries from %d, a %d from 0", shard, len(got), fl.FirstSeq(), len(want))
			}
			for k := range want {
				if got[k].Seq != want[k].Seq || got[k].Time != want[k].Time || !bytes.Equal(got[k].Payload, want[k].Payload) {
					t.Fatalf("shard %d entry %d: b {%d %d %q}, a {%d %d %q}", shard, k,
						got[k].Seq, got[k].Time, got[k].Payload, want[k].Seq, want[k].Time, want[k].Payload)
				}
			}
		}
		statuses := b.DaemonStatuses(true)
		if len(statuses) == 0 {
			t.Fatal("b hosts no daemon copies")
		}
		for _, d := range statuses {
			ol, _ := a.Log(d.Shard)
			history, _ := ol.Read(0, int(ol.NextSeq())+1)
			next, state := foldEntries(t, declNamed(d.Name), history)
			if !d.Running || d.Error != "" || d.Next != next || !bytes.Equal(d.State, state) {
				t.Fatalf("%s/%d on b: running %v error %q next %d state %s; want running at %d with a's fold %s",
					d.Name, d.Shard, d.Running, d.Error, d.Next, d.State, next, state)
			}
		}
	}

	b := openB()
	defer func() { b.Close() }()
	t1 := topo(1, "a", "b")
	apply(t1, a, b)
	ingest(a, t1, 20)
	caughtUp(b)

	// Failover to b, which nobody follows: its writes stay on b.
	t2 := topo(2, "b")
	apply(t2, a, b)
	ingest(b, t2, 10)
	var bHad [2]uint64
	for _, shard := range []uint16{0, 1} {
		l, _ := b.Log(shard)
		bHad[shard] = l.NextSeq()
	}

	// Back to a, which writes other entries at those seqs; b follows.
	t3 := topo(3, "a", "b")
	apply(t3, a)
	ingest(a, t3, 5)
	for _, shard := range []uint16{0, 1} {
		ol, _ := a.Log(shard)
		if bHad[shard] <= ol.NextSeq() {
			t.Fatalf("setup: shard %d: b's log (next %d) is not ahead of a's (%d)", shard, bHad[shard], ol.NextSeq())
		}
	}
	apply(t3, b)
	caughtUp(b)
	matchesA(b)
	resyncs := uint64(0)
	for _, fs := range b.FollowerStatuses() {
		resyncs += fs.Resyncs
	}
	if resyncs != 2 || srv.DivergedResyncs() != 2 {
		t.Fatalf("resyncs: b %d, a %d diverged; want one per shard", resyncs, srv.DivergedResyncs())
	}

	// A restart of b right away resumes its copies from what it stored:
	// a's snapshots, not its own (which are ahead of a's).
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openB()
	apply(t3, b)
	caughtUp(b)
	matchesA(b)
	// Live on.
	ingest(a, t3, 10)
	caughtUp(b)
	matchesA(b)
}
