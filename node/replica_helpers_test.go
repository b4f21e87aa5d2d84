package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/compute/daemons"
	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/redex"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/replication"
	"github.com/purplerain/mesh-operator/node/topology"
)

// Helpers shared by the tests that run a real owner serving replication on
// loopback and a follower node of it (resync, divergence, owner trust).

// serveReplication serves owner's logs for followers on a free port of
// host, with handshakes verified against ck and signed by sessionKey
// (followers require a signed owner, node/followers.go). It returns the
// server and its address; the server stops at cleanup, before anything
// the caller deferred or registered earlier (such as owner.Close).
func serveReplication(t *testing.T, owner *Node, ck *identity.KeyPair, sessionKey func() *identity.KeyPair, host string) (*replication.Server, string) {
	t.Helper()
	srv, err := replication.NewServer(replication.ServerOptions{Source: owner.OwnerSource(),
		Verifier: identity.NewVerifier([]ed25519.PublicKey{ck.PublicKey()}), HeartbeatInterval: 20 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler), SessionKey: sessionKey})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", host+":0")
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-served })
	return srv, ln.Addr().String()
}

// ingestRounds ingests perShard events into each of shards 0 and 1 of n,
// alternating, with payloads numbered from *next on.
func ingestRounds(t *testing.T, n *Node, tp *topology.Topology, perShard int, next *int) {
	t.Helper()
	for range perShard {
		for _, shard := range []uint16{0, 1} {
			if _, err := n.Ingest(context.Background(), []dataapi.Event{{Key: keyFor(tp, shard), Payload: payload(*next)}}); err != nil {
				t.Fatal(err)
			}
			*next++
		}
	}
}

// waitCaughtUp waits until follower b's logs of shards 0 and 1 reach
// owner's heads and every daemon copy on b has folded its log; who names b
// in the failure.
func waitCaughtUp(t *testing.T, owner, b *Node, who string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		done := true
		for _, shard := range []uint16{0, 1} {
			ol, _ := owner.Log(shard)
			fl, _ := b.Log(shard)
			if fl.NextSeq() != ol.NextSeq() {
				done = false
			}
		}
		for _, d := range b.DaemonStatuses(false) {
			fl, _ := b.Log(d.Shard)
			if d.Next != fl.NextSeq() {
				done = false
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not catch up: %+v / daemons %+v", who, b.FollowerStatuses(), b.DaemonStatuses(false))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// declNamed is the test declaration named name (the zero Daemon if none).
func declNamed(name string) nodeconfig.Daemon {
	var decl nodeconfig.Daemon
	for _, dd := range testDecls {
		if dd.Name == name {
			decl = dd
		}
	}
	return decl
}

// foldEntries folds decl over es (a shard's history from seq 0) with a
// fresh host and returns its next seq and its state view as JSON.
func foldEntries(t *testing.T, decl nodeconfig.Daemon, es []redex.Entry) (uint64, []byte) {
	t.Helper()
	cfg, _ := json.Marshal(decl.Config)
	d, err := daemons.Builtins().New(decl.Kind, decl.Name, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := compute.NewHost(decl.Name, decl.Kind, cfg, d, compute.CursorAt(0), compute.HostConfig{})
	for k, e := range es {
		if e.Seq != uint64(k) {
			t.Fatalf("history not dense: entry %d has seq %d", k, e.Seq)
		}
		if _, err := h.Deliver(compute.Event{Seq: e.Seq, Time: e.Time, Payload: e.Payload}); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := h.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	v, err := daemons.StateView(decl.Kind, cfg, snap.State)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(v)
	return snap.Cursor.Next(), b
}

// prunedOwner is an owner a (Memory mode, retention 50 events a shard)
// serving replication of shards 0 and 1 to a Disk-mode follower b, with the
// test daemons on both, and the whole history a appended.
type prunedOwner struct {
	t       *testing.T
	ck      *identity.KeyPair
	owner   *Node
	srv     *replication.Server
	topo    *topology.Topology
	dir     string
	next    int
	history map[uint16][]redex.Entry // every entry a appended, before retention dropped it
}

// newPrunedOwner starts a on aHost and b's directory; b's addresses are on
// bHost. Then b follows 30 events a shard, stops, and a ingests 200 more a
// shard and prunes past what b holds.
func newPrunedOwner(t *testing.T, aHost, bHost string) *prunedOwner {
	t.Helper()
	ck, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	owner, err := New(Options{Name: "a", ClusterKey: ck, Logger: slog.New(slog.DiscardHandler), Config: &nodeconfig.Config{
		Storage:   nodeconfig.Storage{Mode: "Memory", Fsync: "Never"},
		Retention: nodeconfig.Retention{MaxEvents: 50},
		Daemons:   testDecls,
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { owner.Close() })
	srv, addr := serveReplication(t, owner, ck, owner.ClusterKey, aHost)
	p := &prunedOwner{t: t, ck: ck, owner: owner, srv: srv, dir: t.TempDir(), history: map[uint16][]redex.Entry{}}
	p.topo = &topology.Topology{
		Cluster: "demo", Epoch: 1, LeaseMillis: 600_000, BaseShards: 2,
		Members: []topology.Member{
			{Name: "a", Role: topology.Active, Data: aHost + ":1", Wire: addr},
			{Name: "b", Role: topology.Standby, Data: bHost + ":1", Wire: bHost + ":2"},
		},
		Shards: []topology.Shard{{ID: 0, Owner: "a", Followers: []string{"b"}}, {ID: 1, Owner: "a", Followers: []string{"b"}}},
	}
	if err := owner.ApplyTopology(p.topo); err != nil {
		t.Fatal(err)
	}

	b := p.startFollower()
	p.ingest(30)
	p.caughtUp(b)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// b is down; a ingests past its retention and prunes.
	p.ingest(200)
	owner.sweepRetention(time.Now())
	for _, shard := range []uint16{0, 1} {
		ol, _ := owner.Log(shard)
		if ol.FirstSeq() <= 30 {
			t.Fatalf("setup: owner shard %d retains from %d, not past the follower's 30", shard, ol.FirstSeq())
		}
	}
	return p
}

// startFollower opens b on its directory and applies the topology.
func (p *prunedOwner) startFollower() *Node {
	p.t.Helper()
	n, err := New(Options{Name: "b", ClusterKey: p.ck, Logger: slog.New(slog.DiscardHandler), Config: &nodeconfig.Config{
		Storage: nodeconfig.Storage{Mode: "Disk", Dir: p.dir, Fsync: "Never"},
		Daemons: testDecls,
	}})
	if err != nil {
		p.t.Fatal(err)
	}
	if err := n.ApplyTopology(p.topo); err != nil {
		p.t.Fatal(err)
	}
	return n
}

// ingest ingests perShard events a shard into a and records them in the
// history before retention can drop them.
func (p *prunedOwner) ingest(perShard int) {
	p.t.Helper()
	ingestRounds(p.t, p.owner, p.topo, perShard, &p.next)
	for _, shard := range []uint16{0, 1} {
		l, _ := p.owner.Log(shard)
		from := uint64(len(p.history[shard]))
		es, err := l.Read(from, int(l.NextSeq()-from))
		if err != nil {
			p.t.Fatalf("shard %d: read history from %d: %v", shard, from, err)
		}
		p.history[shard] = append(p.history[shard], es...)
	}
}

func (p *prunedOwner) caughtUp(b *Node) {
	p.t.Helper()
	waitCaughtUp(p.t, p.owner, b, "follower")
}

// checkResynced checks b's logs hold exactly a's retained entries (same
// seqs, stamps, payloads, each once, in order) and its three daemon copies
// run as followers equal to the reference fold of the whole history.
func (p *prunedOwner) checkResynced(b *Node) {
	t := p.t
	t.Helper()
	for _, shard := range []uint16{0, 1} {
		ol, _ := p.owner.Log(shard)
		fl, _ := b.Log(shard)
		if fl.FirstSeq() != ol.FirstSeq() || fl.NextSeq() != ol.NextSeq() {
			t.Fatalf("shard %d: follower holds [%d, %d), owner [%d, %d)", shard, fl.FirstSeq(), fl.NextSeq(), ol.FirstSeq(), ol.NextSeq())
		}
		want, _ := ol.Read(ol.FirstSeq(), int(ol.Len()))
		got, _ := fl.Read(fl.FirstSeq(), int(fl.Len())+1)
		if len(got) != len(want) {
			t.Fatalf("shard %d: follower holds %d entries, owner retains %d", shard, len(got), len(want))
		}
		for k := range want {
			if got[k].Seq != want[k].Seq || got[k].Time != want[k].Time || !bytes.Equal(got[k].Payload, want[k].Payload) {
				t.Fatalf("shard %d entry %d: follower {%d %d %q}, owner {%d %d %q}", shard, k,
					got[k].Seq, got[k].Time, got[k].Payload, want[k].Seq, want[k].Time, want[k].Payload)
			}
		}
	}
	statuses := b.DaemonStatuses(true)
	if len(statuses) != 3 {
		t.Fatalf("follower hosts %d daemon copies, want 3: %+v", len(statuses), statuses)
	}
	for _, d := range statuses {
		next, state := foldEntries(t, declNamed(d.Name), p.history[d.Shard])
		if d.Role != "follower" || !d.Running || d.Error != "" || d.Next != next {
			t.Fatalf("%s/%d on the follower: role %q running %v error %q next %d; want a running follower copy at %d",
				d.Name, d.Shard, d.Role, d.Running, d.Error, d.Next, next)
		}
		if !bytes.Equal(d.State, state) {
			t.Fatalf("%s/%d on the follower: state %s, want the reference fold of the whole history %s", d.Name, d.Shard, d.State, state)
		}
	}
}

// ownerSnapshotsAt returns the encoded snapshots of every test daemon
// after folding es, as an owner sends them at a resync.
func ownerSnapshotsAt(t *testing.T, es []redex.Entry) [][]byte {
	t.Helper()
	var snaps [][]byte
	for _, decl := range testDecls {
		cfg, _ := json.Marshal(decl.Config)
		d, err := daemons.Builtins().New(decl.Kind, decl.Name, cfg)
		if err != nil {
			t.Fatal(err)
		}
		h := compute.NewHost(decl.Name, decl.Kind, cfg, d, compute.CursorAt(0), compute.HostConfig{})
		for _, e := range es {
			if _, err := h.Deliver(compute.Event{Seq: e.Seq, Time: e.Time, Payload: e.Payload}); err != nil {
				t.Fatal(err)
			}
		}
		s, err := h.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, s.Encode())
	}
	return snaps
}

// denseHistory is n entries with seqs and stamps 0..n-1.
func denseHistory(n int) []redex.Entry {
	var history []redex.Entry
	for i := range n {
		history = append(history, redex.Entry{Seq: uint64(i), Time: int64(i), Payload: payload(i)})
	}
	return history
}
