package node

import (
	"bytes"
	"log/slog"
	"testing"
	"time"

	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/replication"
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
	p := newPrunedOwner(t, "127.0.2.150", "127.0.2.151")
	b := p.startFollower()
	defer b.Close()
	p.caughtUp(b)
	p.checkResynced(b)
	resyncs := uint64(0)
	for _, fs := range b.FollowerStatuses() {
		resyncs += fs.Resyncs
	}
	if resyncs != 2 || p.srv.Resyncs() != 2 {
		t.Fatalf("resyncs: follower %d, owner %d; want one per shard", resyncs, p.srv.Resyncs())
	}

	// Live replication goes on after the resync.
	p.ingest(40)
	p.caughtUp(b)
	p.checkResynced(b)
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
	history := denseHistory(100)
	// The owner's daemons at seq 60 (its log retains from 40 on).
	snaps := ownerSnapshotsAt(t, history[:60])
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
		next, state := foldEntries(t, declNamed(d.Name), history)
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
	history := denseHistory(100)
	snaps := ownerSnapshotsAt(t, history[:60])
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
		next, state := foldEntries(t, declNamed(d.Name), history)
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
	p := newPrunedOwner(t, "127.0.27.152", "127.0.27.153")

	// b restarts lagged and is resynced, but "dies" right after each
	// follower reset its log: the owner's daemon state is never restored
	// in memory. It restarts again on the same directory.
	resyncCrashed = func() bool { return true }
	t.Cleanup(func() { resyncCrashed = nil })
	b := p.startFollower()
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
	b = p.startFollower()
	defer b.Close()
	p.caughtUp(b)
	p.checkResynced(b)

	// Live replication goes on.
	p.ingest(40)
	p.caughtUp(b)
	p.checkResynced(b)
}
