package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/node/topology"
)

// These pin the bookkeeping of shard moves in status.migrations without
// an API server (go test -run 'TestMoves' ./controllers/).

func movesCluster() (*meshv1.MeshCluster, *topology.Topology) {
	mc := &meshv1.MeshCluster{ObjectMeta: metav1.ObjectMeta{Name: "m", Generation: 3}}
	mc.Status.ObservedGeneration = 3
	t := &topology.Topology{Cluster: "m", Epoch: 7, BaseShards: 4, LeaseMillis: 2000,
		Members: []topology.Member{{Name: "a", Role: topology.Active}, {Name: "b", Role: topology.Active}, {Name: "c", Role: topology.Active}, {Name: "s", Role: topology.Standby}},
		Shards: []topology.Shard{
			{ID: 0, Owner: "a", Followers: []string{"s"}},
			{ID: 1, Owner: "a", Followers: []string{"s", "c"}},
			{ID: 2, Owner: "b", Followers: []string{"s"}, Fenced: true},
			{ID: 3, Owner: "b", Followers: []string{"s", "a"}},
		}}
	return mc, t
}

func TestMovesPickDistinctShardsFromTheirOwnersSkippingAborted(t *testing.T) {
	_, topo := movesCluster()
	plan := []topology.Move{{Shard: 0, From: "a", To: "c"}, {Shard: 0, From: "c", To: "b"}, {Shard: 2, From: "x", To: "c"}, {Shard: 1, From: "a", To: "c"}, {Shard: 3, From: "b", To: "c"}}
	got := pickMoves(topo, plan, map[uint16]bool{1: true}, 3)
	want := []topology.Move{{Shard: 0, From: "a", To: "c"}, {Shard: 3, From: "b", To: "c"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("picked %v, want %v", got, want)
	}
	if got := pickMoves(topo, plan, nil, 1); len(got) != 1 || got[0] != plan[0] {
		t.Fatalf("limit 1: %v", got)
	}
}

func TestMovesRecordsKeepAbortedAndTheirStart(t *testing.T) {
	mc, _ := movesCluster()
	started := metav1.NewTime(time.Now().Add(-time.Minute).Truncate(time.Second))
	mc.Status.Migrations = []meshv1.MigrationStatus{
		{Shard: 0, From: "a", To: "c", Phase: phaseHandoff, StartedAt: &started},
		{Shard: 1, From: "a", To: "c", Phase: phaseAborted, StartedAt: &started},
	}
	records := withMoves(mc.Status.Migrations, []topology.Move{{Shard: 0, From: "a", To: "c"}, {Shard: 3, From: "b", To: "c"}})
	if len(records) != 3 || records[0].Shard != 1 || records[0].Phase != phaseAborted {
		t.Fatalf("records %+v: the aborted move of shard 1 must stay", records)
	}
	records = stampMigrations(mc, records)
	if !records[1].StartedAt.Equal(&started) {
		t.Fatalf("the move under way keeps its start: %v, want %v", records[1].StartedAt, started)
	}
	if records[2].StartedAt == nil || records[2].StartedAt.Before(&started) {
		t.Fatalf("a new move starts now: %v", records[2].StartedAt)
	}
	// A different target is a different move: it starts now.
	other := stampMigrations(mc, withMoves(nil, []topology.Move{{Shard: 0, From: "a", To: "b"}}))
	if other[0].StartedAt.Equal(&started) {
		t.Fatal("a move to another node inherited the start of the recorded one")
	}
}

func TestMovesAbortedHoldUntilTheSpecChanges(t *testing.T) {
	mc, topo := movesCluster()
	mc.Status.Migrations = []meshv1.MigrationStatus{
		{Shard: 1, From: "a", To: "c", Phase: phaseAborted},
		{Shard: 3, From: "a", To: "c", Phase: phaseAborted}, // b owns it now
		{Shard: 0, From: "a", To: "c", Phase: phaseHandoff},
	}
	if got := keptAborted(mc, topo); len(got) != 1 || got[0].Shard != 1 {
		t.Fatalf("kept %+v, want the aborted move of shard 1 only", got)
	}
	mc.Generation++
	if got := keptAborted(mc, topo); len(got) != 0 {
		t.Fatalf("an edited spec tries aborted moves again; kept %+v", got)
	}
}

func TestMovesResumableOnlyWhileUnderWay(t *testing.T) {
	_, topo := movesCluster()
	for _, c := range []struct {
		move topology.Move
		want bool
	}{
		{topology.Move{Shard: 1, From: "a", To: "c"}, true},  // c follows
		{topology.Move{Shard: 2, From: "b", To: "c"}, true},  // fenced
		{topology.Move{Shard: 0, From: "a", To: "c"}, false}, // not started
		{topology.Move{Shard: 3, From: "a", To: "b"}, false}, // b owns it
		{topology.Move{Shard: 1, From: "a", To: "s"}, false}, // a standby cannot own
	} {
		if got := resumable(topo, c.move); got != c.want {
			t.Errorf("resumable(%+v) = %v, want %v", c.move, got, c.want)
		}
	}
}
