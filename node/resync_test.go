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

// TestStoppedFollowerResyncsAfterTheOwnerPrunedPastIt runs an owner (a,
// Memory mode, retention 50 events a shard) serving replication on
// loopback and a follower (b, Disk mode) of both its shards, with the
// test daemons on both. b is stopped, a ingests far past its retention
// and prunes, b restarts on its old directory: its followers are lagged,
// so the owner resyncs them. Afterwards b's logs hold exactly a's retained
// entries (same seqs, stamps, payloads, each once, in order), live
// replication goes on, and every warm daemon copy on b equals a reference
// fold of the shard's whole history, which b's own log no longer holds.
func TestStoppedFollowerResyncsAfterTheOwnerPrunedPastIt(t *testing.T) {
	ctx := context.Background()
	ck, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	owner, err := New(Options{Name: "a", ClusterKey: ck, Logger: log, Config: &nodeconfig.Config{
		Storage:   nodeconfig.Storage{Mode: "Memory", Fsync: "Never"},
		Retention: nodeconfig.Retention{MaxEvents: 50},
		Daemons:   testDecls,
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	srv, err := replication.NewServer(replication.ServerOptions{Source: owner.OwnerSource(),
		Verifier: identity.NewVerifier([]ed25519.PublicKey{ck.PublicKey()}), HeartbeatInterval: 20 * time.Millisecond, Logger: log,
		SessionKey: owner.ClusterKey}) // followers require a signed owner (node/followers.go)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.2.150:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() { srv.Close(); <-served }()

	topo := &topology.Topology{
		Cluster: "demo", Epoch: 1, LeaseMillis: 600_000, BaseShards: 2,
		Members: []topology.Member{
			{Name: "a", Role: topology.Active, Data: "127.0.2.150:1", Wire: ln.Addr().String()},
			{Name: "b", Role: topology.Standby, Data: "127.0.2.151:1", Wire: "127.0.2.151:2"},
		},
		Shards: []topology.Shard{{ID: 0, Owner: "a", Followers: []string{"b"}}, {ID: 1, Owner: "a", Followers: []string{"b"}}},
	}
	if err := owner.ApplyTopology(topo); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	startFollower := func() *Node {
		t.Helper()
		n, err := New(Options{Name: "b", ClusterKey: ck, Logger: log, Config: &nodeconfig.Config{
			Storage: nodeconfig.Storage{Mode: "Disk", Dir: dir, Fsync: "Never"},
			Daemons: testDecls,
		}})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.ApplyTopology(topo); err != nil {
			t.Fatal(err)
		}
		return n
	}
	i := 0
	ingest := func(perShard int) {
		t.Helper()
		for range perShard {
			for _, shard := range []uint16{0, 1} {
				if _, err := owner.Ingest(ctx, []dataapi.Event{{Key: keyFor(topo, shard), Payload: payload(i)}}); err != nil {
					t.Fatal(err)
				}
				i++
			}
		}
	}
	// history keeps every entry the owner appended, before retention
	// drops them, for the reference fold.
	history := map[uint16][]redex.Entry{}
	record := func() {
		t.Helper()
		for _, shard := range []uint16{0, 1} {
			l, _ := owner.Log(shard)
			from := uint64(len(history[shard]))
			es, err := l.Read(from, int(l.NextSeq()-from))
			if err != nil {
				t.Fatalf("shard %d: read history from %d: %v", shard, from, err)
			}
			history[shard] = append(history[shard], es...)
		}
	}
	caughtUp := func(b *Node) {
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
				t.Fatalf("follower did not catch up: %+v / daemons %+v", b.FollowerStatuses(), b.DaemonStatuses(false))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	b := startFollower()
	ingest(30)
	record()
	caughtUp(b)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	// b is down; a ingests past its retention and prunes.
	ingest(200)
	record()
	owner.sweepRetention(time.Now())
	for _, shard := range []uint16{0, 1} {
		ol, _ := owner.Log(shard)
		if ol.FirstSeq() <= 30 {
			t.Fatalf("setup: owner shard %d retains from %d, not past the follower's 30", shard, ol.FirstSeq())
		}
	}

	b = startFollower()
	defer b.Close()
	caughtUp(b)
	checkResynced := func() {
		t.Helper()
		for _, shard := range []uint16{0, 1} {
			ol, _ := owner.Log(shard)
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
			var decl nodeconfig.Daemon
			for _, dd := range testDecls {
				if dd.Name == d.Name {
					decl = dd
				}
			}
			next, state := foldEntries(t, decl, history[d.Shard])
			if d.Role != "follower" || !d.Running || d.Error != "" || d.Next != next {
				t.Fatalf("%s/%d on the follower: role %q running %v error %q next %d; want a running follower copy at %d",
					d.Name, d.Shard, d.Role, d.Running, d.Error, d.Next, next)
			}
			if !bytes.Equal(d.State, state) {
				t.Fatalf("%s/%d on the follower: state %s, want the reference fold of the whole history %s", d.Name, d.Shard, d.State, state)
			}
		}
	}
	checkResynced()
	resyncs := uint64(0)
	for _, fs := range b.FollowerStatuses() {
		resyncs += fs.Resyncs
	}
	if resyncs != 2 || srv.Resyncs() != 2 {
		t.Fatalf("resyncs: follower %d, owner %d; want one per shard", resyncs, srv.Resyncs())
	}

	// Live replication goes on after the resync.
	ingest(40)
	record()
	caughtUp(b)
	checkResynced()
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

// TestResyncBeforeTheHostsExistSeedsThem: a restarted follower can be
// resynced before the topology it applies has created its daemon hosts.
// The owner's snapshots are then kept as seeds and the hosts start from
// them (not from seq 0, which the reset log no longer holds).
func TestResyncBeforeTheHostsExistSeedsThem(t *testing.T) {
	b, err := New(Options{Name: "b", Logger: slog.New(slog.DiscardHandler), Config: &nodeconfig.Config{
		Storage: nodeconfig.Storage{Mode: "Memory", Fsync: "Never"},
		Daemons: testDecls,
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var history []redex.Entry
	for i := range 100 {
		history = append(history, redex.Entry{Seq: uint64(i), Time: int64(i), Payload: payload(i)})
	}
	// The owner's daemons at seq 60 (its log retains from 40 on).
	var snaps [][]byte
	for _, decl := range testDecls {
		cfg, _ := json.Marshal(decl.Config)
		d, err := daemons.Builtins().New(decl.Kind, decl.Name, cfg)
		if err != nil {
			t.Fatal(err)
		}
		h := compute.NewHost(decl.Name, decl.Kind, cfg, d, compute.CursorAt(0), compute.HostConfig{})
		for _, e := range history[:60] {
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
	l, err := b.Log(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.ResetTo(40); err != nil {
		t.Fatal(err)
	}
	b.resyncDaemons(replication.Resync{Shard: 1, First: 40, OwnerNext: 100, Daemons: snaps})
	if err := l.AppendReplicatedBatch(history[40:]); err != nil {
		t.Fatal(err)
	}
	if err := b.ApplyTopology(shardTopology(1, "a", "b")); err != nil {
		t.Fatal(err)
	}
	got := waitDaemons(t, b)
	for _, key := range []string{"visits/1", "spend/1"} {
		d, ok := got[key]
		if !ok {
			t.Fatalf("no %s hosted: %v", key, got)
		}
		var decl nodeconfig.Daemon
		for _, dd := range testDecls {
			if dd.Name == d.Name {
				decl = dd
			}
		}
		next, state := foldEntries(t, decl, history)
		if !d.Running || d.Next != next || !bytes.Equal(d.State, state) {
			t.Fatalf("%s: running %v next %d state %s; want running at %d with the fold of the whole history %s", key, d.Running, d.Next, d.State, next, state)
		}
	}
}

// TestDiskFollowerRestartedBeforeCatchingUpKeepsTheResyncSnapshot: a
// Disk-mode follower stores the owner's snapshot (cursor 60) at a resync
// while its log, reset to 40, holds nothing yet, and restarts right then.
// Its copies start from the stored snapshot again (the log refills from
// the owner) instead of folding from seq 0, which the log no longer holds.
func TestDiskFollowerRestartedBeforeCatchingUpKeepsTheResyncSnapshot(t *testing.T) {
	dir := t.TempDir()
	open := func() *Node {
		t.Helper()
		n, err := New(Options{Name: "b", Logger: slog.New(slog.DiscardHandler), Config: &nodeconfig.Config{
			Storage: nodeconfig.Storage{Mode: "Disk", Dir: dir, Fsync: "Never"},
			Daemons: testDecls,
		}})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	var history []redex.Entry
	for i := range 100 {
		history = append(history, redex.Entry{Seq: uint64(i), Time: int64(i), Payload: payload(i)})
	}
	var snaps [][]byte
	for _, decl := range testDecls {
		cfg, _ := json.Marshal(decl.Config)
		d, _ := daemons.Builtins().New(decl.Kind, decl.Name, cfg)
		h := compute.NewHost(decl.Name, decl.Kind, cfg, d, compute.CursorAt(0), compute.HostConfig{})
		for _, e := range history[:60] {
			if _, err := h.Deliver(compute.Event{Seq: e.Seq, Time: e.Time, Payload: e.Payload}); err != nil {
				t.Fatal(err)
			}
		}
		s, _ := h.Snapshot()
		snaps = append(snaps, s.Encode())
	}
	b := open()
	l, err := b.Log(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.ResetTo(40); err != nil {
		t.Fatal(err)
	}
	b.resyncDaemons(replication.Resync{Shard: 1, First: 40, OwnerNext: 100, Daemons: snaps})
	if err := b.ApplyTopology(shardTopology(1, "a", "b")); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil { // before a single entry arrived
		t.Fatal(err)
	}

	b = open()
	defer b.Close()
	l, err = b.Log(1)
	if err != nil {
		t.Fatal(err)
	}
	if l.FirstSeq() != 40 || l.NextSeq() != 40 {
		t.Fatalf("reopened follower log [%d, %d), want empty at 40", l.FirstSeq(), l.NextSeq())
	}
	if err := b.ApplyTopology(shardTopology(1, "a", "b")); err != nil {
		t.Fatal(err)
	}
	if err := l.AppendReplicatedBatch(history[40:]); err != nil {
		t.Fatal(err)
	}
	got := waitDaemons(t, b)
	for _, key := range []string{"visits/1", "spend/1"} {
		d := got[key]
		var decl nodeconfig.Daemon
		for _, dd := range testDecls {
			if dd.Name == d.Name {
				decl = dd
			}
		}
		next, state := foldEntries(t, decl, history)
		if !d.Running || d.Next != next || !bytes.Equal(d.State, state) {
			t.Fatalf("%s after the restart: running %v error %q next %d state %s; want running at %d with the fold of the whole history %s",
				key, d.Running, d.Error, d.Next, d.State, next, state)
		}
	}
}

// TestFollowerCrashedRightAfterAResyncResetKeepsItsDaemonCopies: as
// TestStoppedFollowerResyncsAfterTheOwnerPrunedPastIt, but the follower
// process dies right after its logs were reset to the owner's head, before
// the owner's daemon snapshots were restored. Its log is then no longer
// lagged, so nothing resyncs it again: its warm daemon copies must come
// back from the owner's snapshots, staged on disk before the reset, and
// equal the reference fold of the whole history, not halt because their
// own snapshots lie below the log's new head.
func TestFollowerCrashedRightAfterAResyncResetKeepsItsDaemonCopies(t *testing.T) {
	ctx := context.Background()
	ck, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	owner, err := New(Options{Name: "a", ClusterKey: ck, Logger: log, Config: &nodeconfig.Config{
		Storage:   nodeconfig.Storage{Mode: "Memory", Fsync: "Never"},
		Retention: nodeconfig.Retention{MaxEvents: 50},
		Daemons:   testDecls,
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	srv, err := replication.NewServer(replication.ServerOptions{Source: owner.OwnerSource(),
		Verifier: identity.NewVerifier([]ed25519.PublicKey{ck.PublicKey()}), HeartbeatInterval: 20 * time.Millisecond, Logger: log,
		SessionKey: owner.ClusterKey}) // followers require a signed owner (node/followers.go)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.27.152:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() { srv.Close(); <-served }()

	topo := &topology.Topology{
		Cluster: "demo", Epoch: 1, LeaseMillis: 600_000, BaseShards: 2,
		Members: []topology.Member{
			{Name: "a", Role: topology.Active, Data: "127.0.27.152:1", Wire: ln.Addr().String()},
			{Name: "b", Role: topology.Standby, Data: "127.0.27.153:1", Wire: "127.0.27.153:2"},
		},
		Shards: []topology.Shard{{ID: 0, Owner: "a", Followers: []string{"b"}}, {ID: 1, Owner: "a", Followers: []string{"b"}}},
	}
	if err := owner.ApplyTopology(topo); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	startFollower := func() *Node {
		t.Helper()
		n, err := New(Options{Name: "b", ClusterKey: ck, Logger: log, Config: &nodeconfig.Config{
			Storage: nodeconfig.Storage{Mode: "Disk", Dir: dir, Fsync: "Never"},
			Daemons: testDecls,
		}})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.ApplyTopology(topo); err != nil {
			t.Fatal(err)
		}
		return n
	}
	i := 0
	ingest := func(perShard int) {
		t.Helper()
		for range perShard {
			for _, shard := range []uint16{0, 1} {
				if _, err := owner.Ingest(ctx, []dataapi.Event{{Key: keyFor(topo, shard), Payload: payload(i)}}); err != nil {
					t.Fatal(err)
				}
				i++
			}
		}
	}
	// history keeps every entry the owner appended, before retention
	// drops them, for the reference fold.
	history := map[uint16][]redex.Entry{}
	record := func() {
		t.Helper()
		for _, shard := range []uint16{0, 1} {
			l, _ := owner.Log(shard)
			from := uint64(len(history[shard]))
			es, err := l.Read(from, int(l.NextSeq()-from))
			if err != nil {
				t.Fatalf("shard %d: read history from %d: %v", shard, from, err)
			}
			history[shard] = append(history[shard], es...)
		}
	}
	caughtUp := func(b *Node) {
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
				t.Fatalf("follower did not catch up: %+v / daemons %+v", b.FollowerStatuses(), b.DaemonStatuses(false))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	b := startFollower()
	ingest(30)
	record()
	caughtUp(b)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	// b is down; a ingests past its retention and prunes.
	ingest(200)
	record()
	owner.sweepRetention(time.Now())
	for _, shard := range []uint16{0, 1} {
		ol, _ := owner.Log(shard)
		if ol.FirstSeq() <= 30 {
			t.Fatalf("setup: owner shard %d retains from %d, not past the follower's 30", shard, ol.FirstSeq())
		}
	}

	// b restarts lagged and is resynced, but "dies" right after each
	// follower reset its log: the owner's daemon state is never restored
	// in memory. It restarts again on the same directory.
	resyncCrashed = func() bool { return true }
	t.Cleanup(func() { resyncCrashed = nil })
	b = startFollower()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := uint64(0)
		for _, fs := range b.FollowerStatuses() {
			n += fs.Resyncs
		}
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b was not resynced: %+v", b.FollowerStatuses())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	resyncCrashed = nil
	b = startFollower()
	defer b.Close()
	caughtUp(b)
	checkResynced := func() {
		t.Helper()
		for _, shard := range []uint16{0, 1} {
			ol, _ := owner.Log(shard)
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
			var decl nodeconfig.Daemon
			for _, dd := range testDecls {
				if dd.Name == d.Name {
					decl = dd
				}
			}
			next, state := foldEntries(t, decl, history[d.Shard])
			if d.Role != "follower" || !d.Running || d.Error != "" || d.Next != next {
				t.Fatalf("%s/%d on the follower: role %q running %v error %q next %d; want a running follower copy at %d",
					d.Name, d.Shard, d.Role, d.Running, d.Error, d.Next, next)
			}
			if !bytes.Equal(d.State, state) {
				t.Fatalf("%s/%d on the follower: state %s, want the reference fold of the whole history %s", d.Name, d.Shard, d.State, state)
			}
		}
	}
	checkResynced()

	// Live replication goes on.
	ingest(40)
	record()
	caughtUp(b)
	checkResynced()
}
