package node

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/compute/daemons"
	"github.com/purplerain/mesh-operator/engine/redex"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/topology"
)

var testDecls = []nodeconfig.Daemon{
	{Name: "visits", Kind: daemons.KindCounter, Config: map[string]string{"keyField": "user"}},
	{Name: "spend", Kind: daemons.KindSum, Shards: []int{1},
		Config: map[string]string{"field": "amount", "window": "1s", "keyField": "user", "timeField": "ts"}},
}

func newDaemonNode(t *testing.T, name string) *Node {
	t.Helper()
	clock := &fakeClock{t: time.Unix(1000, 0)}
	n, err := New(Options{Name: name, Now: clock.now,
		Config: &nodeconfig.Config{Storage: nodeconfig.Storage{Mode: "Memory"}, Daemons: testDecls}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return n
}

// shardTopology: a owns shard 0; shard 1 is owned by owner1 and followed
// by followers1.
func shardTopology(epoch uint64, owner1 string, followers1 ...string) *topology.Topology {
	return &topology.Topology{
		Cluster: "demo", Epoch: epoch, LeaseMillis: 2000, BaseShards: 2,
		Members: []topology.Member{{Name: "a", Role: topology.Active, Data: "a:9441"}, {Name: "b", Role: topology.Active, Data: "b:9441"}},
		Shards:  []topology.Shard{{ID: 0, Owner: "a"}, {ID: 1, Owner: owner1, Followers: followers1}},
	}
}

func payload(i int) []byte {
	return fmt.Appendf(nil, `{"user":"u%d","amount":%d,"ts":%d}`, i%3, i, int64(i)*300_000_000)
}

// referenceFold folds decl over every entry of l with a fresh host.
func referenceFold(t *testing.T, decl nodeconfig.Daemon, l *redex.Log) (next uint64, state []byte) {
	t.Helper()
	es, err := l.Read(0, int(l.NextSeq())+1)
	if err != nil {
		t.Fatal(err)
	}
	return foldEntries(t, decl, es)
}

// waitDaemons waits until every hosted instance has folded its shard's
// whole log and returns the statuses, by "name/shard".
func waitDaemons(t *testing.T, n *Node) map[string]DaemonStatus {
	t.Helper()
	return waitDaemonsState(t, n, true)
}

// waitDaemonsState is waitDaemons; withState false takes no snapshots
// (which in Disk mode would also be stored).
func waitDaemonsState(t *testing.T, n *Node, withState bool) map[string]DaemonStatus {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := map[string]DaemonStatus{}
		caughtUp := true
		for _, d := range n.DaemonStatuses(withState) {
			out[fmt.Sprintf("%s/%d", d.Name, d.Shard)] = d
			l, err := n.Log(d.Shard)
			if err != nil {
				t.Fatal(err)
			}
			if d.Next != l.NextSeq() {
				caughtUp = false
			}
		}
		if caughtUp {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemons did not fold their logs: %+v", n.DaemonStatuses(false))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func checkAgainstReference(t *testing.T, n *Node, got map[string]DaemonStatus) {
	t.Helper()
	for k, d := range got {
		l, _ := n.Log(d.Shard)
		next, state := referenceFold(t, declNamed(d.Name), l)
		if d.Next != next || next == 0 || d.Through == nil || *d.Through != next-1 {
			t.Fatalf("%s: next %d through %v, want next %d through %d", k, d.Next, d.Through, next, next-1)
		}
		if !bytes.Equal(d.State, state) {
			t.Fatalf("%s: state %s, want the reference fold %s", k, d.State, state)
		}
		if !d.Running || d.Error != "" {
			t.Fatalf("%s: running %v error %q", k, d.Running, d.Error)
		}
	}
}

func keyFor(t *topology.Topology, shard uint16) []byte {
	for i := 0; ; i++ {
		k := fmt.Appendf(nil, "k%d", i)
		if topology.KeyShard(k, t.BaseShards) == shard {
			return k
		}
	}
}

// TestDaemonsRunOnOwnedAndFollowedShardsAndKeepStateWhenOwnershipMoves
// hosts a counter on every shard and a sum on shard 1 only: owned shard 0
// is fed by ingest, followed shard 1 by replicated appends (warm copies).
// When the node becomes shard 1's owner its copies keep running with the
// owner role and the state they had; when it neither owns nor follows the
// shard they stop.
func TestDaemonsRunOnOwnedAndFollowedShardsAndKeepStateWhenOwnershipMoves(t *testing.T) {
	ctx := context.Background()
	n := newDaemonNode(t, "a")
	t1 := shardTopology(1, "b", "a")
	if err := n.ApplyTopology(t1); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := n.Ingest(ctx, []dataapi.Event{{Key: keyFor(t1, 0), Payload: payload(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	followed, err := n.Log(1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		if err := followed.AppendReplicated(redex.Entry{Seq: uint64(i), Time: int64(i), Payload: payload(i)}); err != nil {
			t.Fatal(err)
		}
	}
	got := waitDaemons(t, n)
	want := map[string]string{"visits/0": "owner", "visits/1": "follower", "spend/1": "follower"}
	if len(got) != len(want) {
		t.Fatalf("hosted %v, want %v", got, want)
	}
	for k, role := range want {
		if got[k].Role != role {
			t.Fatalf("%s role %q, want %q", k, got[k].Role, role)
		}
	}
	checkAgainstReference(t, n, got)
	if v := daemonGauge(t, n, "mesh_daemon_next_seq", "visits", "1", "follower"); v != 30 {
		t.Fatalf("mesh_daemon_next_seq of visits on shard 1 = %v, want 30", v)
	}
	if v := daemonGauge(t, n, "mesh_daemon_running", "spend", "1", "follower"); v != 1 {
		t.Fatalf("mesh_daemon_running of spend on shard 1 = %v, want 1", v)
	}

	// Promotion: a owns shard 1. The same hosts go on (they do not refold
	// from 0: Processed counts each entry once) and follow new writes.
	before := hostOf(n, "visits", 1)
	if err := n.Promote(shardTopology(2, "a"), []uint16{1}); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := n.Ingest(ctx, []dataapi.Event{{Key: keyFor(t1, 1), Payload: payload(100 + i)}}); err != nil {
			t.Fatal(err)
		}
	}
	got = waitDaemons(t, n)
	if got["visits/1"].Role != "owner" || got["spend/1"].Role != "owner" {
		t.Fatalf("after promotion: %+v", got)
	}
	if after := hostOf(n, "visits", 1); after != before || after.Processed() != 40 {
		t.Fatalf("the warm copy was replaced or refolded: same host %v, processed %d (want 40)", after == before, after.Processed())
	}
	checkAgainstReference(t, n, got)

	// a leaves shard 1 altogether: its daemons there stop.
	if err := n.ApplyTopology(shardTopology(3, "b")); err != nil {
		t.Fatal(err)
	}
	if got := n.DaemonStatuses(false); len(got) != 1 || got[0].Name != "visits" || got[0].Shard != 0 {
		t.Fatalf("after leaving shard 1: %+v", got)
	}
}

func TestUnknownDaemonKindFailsNewNamingTheField(t *testing.T) {
	decls := []nodeconfig.Daemon{testDecls[0], {Name: "x", Kind: "nope"}}
	_, err := New(Options{Name: "a", Config: &nodeconfig.Config{Storage: nodeconfig.Storage{Mode: "Memory"}, Daemons: decls}})
	if err == nil || !strings.Contains(err.Error(), "daemons[1]") {
		t.Fatalf("want an error naming daemons[1], got %v", err)
	}
	bad := []nodeconfig.Daemon{{Name: "s", Kind: daemons.KindSum, Config: map[string]string{"field": "amount"}}}
	_, err = New(Options{Name: "a", Config: &nodeconfig.Config{Storage: nodeconfig.Storage{Mode: "Memory"}, Daemons: bad}})
	if err == nil || !strings.Contains(err.Error(), "daemons[0]") {
		t.Fatalf("a sum without a window: want an error naming daemons[0], got %v", err)
	}
}

func hostOf(n *Node, name string, shard uint16) *compute.Host {
	n.daemons.mu.Lock()
	defer n.daemons.mu.Unlock()
	if h := n.daemons.hosts[daemonKey{name, shard}]; h != nil {
		return h.host
	}
	return nil
}

// TestDiskNodeResumesDaemonsFromTheirSnapshots restarts a Disk-mode node:
// its daemons resume from their stored periodic snapshots (folding only
// the entries after them) and equal a reference fold of the whole log; a
// changed declaration ignores the stale snapshot and refolds from 0.
func TestDiskNodeResumesDaemonsFromTheirSnapshots(t *testing.T) {
	old := daemonSnapshotEvery
	daemonSnapshotEvery = 16
	t.Cleanup(func() { daemonSnapshotEvery = old })
	dir := t.TempDir()
	decls := testDecls[:1] // visits on every shard
	open := func(decls []nodeconfig.Daemon) *Node {
		t.Helper()
		n, err := New(Options{Name: "a", Now: (&fakeClock{t: time.Unix(1000, 0)}).now,
			Config: &nodeconfig.Config{Storage: nodeconfig.Storage{Mode: "Disk", Dir: dir, Fsync: "Never"}, Daemons: decls}})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.ApplyTopology(shardTopology(1, "a")); err != nil {
			t.Fatal(err)
		}
		return n
	}
	n := open(decls)
	topo := shardTopology(1, "a")
	for i := range 50 {
		if _, err := n.Ingest(context.Background(), []dataapi.Event{{Key: keyFor(topo, 0), Payload: payload(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	waitDaemonsState(t, n, false)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n = open(decls)
	waitDaemonsState(t, n, false)
	if p := hostOf(n, "visits", 0).Processed(); p != 2 {
		t.Fatalf("restarted daemon folded %d entries, want the 2 after its last periodic snapshot (48 of 50)", p)
	}
	got := waitDaemons(t, n)
	checkAgainstReference(t, n, map[string]DaemonStatus{"visits/0": got["visits/0"]})
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	// The same name with another config: the snapshot does not apply.
	changed := []nodeconfig.Daemon{{Name: "visits", Kind: daemons.KindCounter, Config: map[string]string{"keyField": "amount"}}}
	n = open(changed)
	t.Cleanup(func() { _ = n.Close() })
	waitDaemonsState(t, n, false)
	if p := hostOf(n, "visits", 0).Processed(); p != 50 {
		t.Fatalf("with a changed config the daemon folded %d entries, want all 50 from seq 0", p)
	}
}

func daemonGauge(t *testing.T, n *Node, name, daemon, shard, role string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(n.NewCollector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["daemon"] == daemon && labels["shard"] == shard && labels["role"] == role {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no %s{daemon=%q,shard=%q,role=%q}", name, daemon, shard, role)
	return 0
}
