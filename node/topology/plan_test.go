package topology

import (
	"fmt"
	"slices"
	"testing"
)

func members(actives, standbys int) []Member {
	var ms []Member
	for i := range actives + standbys {
		role := Active
		if i >= actives {
			role = Standby
		}
		ms = append(ms, Member{Name: fmt.Sprintf("n-%d", i), Role: role})
	}
	return ms
}

func ownerCounts(t *Topology) map[string]int {
	c := map[string]int{}
	for _, m := range t.Members {
		if m.Role == Active {
			c[m.Name] = 0
		}
	}
	for _, s := range t.Shards {
		c[s.Owner]++
	}
	return c
}

func skew(counts map[string]int, leaving []string) int {
	lo, hi := 1<<30, -1
	for n, c := range counts {
		if slices.Contains(leaving, n) {
			continue
		}
		lo, hi = min(lo, c), max(hi, c)
	}
	return hi - lo
}

func TestInitialSpreadsShardsAndStandbysFollowAll(t *testing.T) {
	top, err := Initial("demo", members(3, 1), 8, 2000)
	if err != nil {
		t.Fatal(err)
	}
	if got := skew(ownerCounts(top), nil); got > 1 {
		t.Fatalf("skew %d: %v", got, ownerCounts(top))
	}
	for _, s := range top.Shards {
		if !slices.Equal(s.Followers, []string{"n-3"}) {
			t.Fatalf("shard %d followers %v, want the standby", s.ID, s.Followers)
		}
	}
	if _, err := Initial("demo", members(0, 1), 4, 2000); err == nil {
		t.Fatal("a cluster without actives must be refused")
	}
}

// apply runs Balance to completion, one bounded batch of moves at a time,
// as the operator does.
func apply(t *testing.T, top *Topology, leaving []string, limit int) (*Topology, int) {
	t.Helper()
	total := 0
	for range 1000 {
		moves := Balance(top, leaving, limit)
		if len(moves) == 0 {
			return top, total
		}
		if limit > 0 && len(moves) > limit {
			t.Fatalf("%d moves exceed the limit %d", len(moves), limit)
		}
		for _, m := range moves {
			var err error
			if top, err = WithMove(top, m); err != nil {
				t.Fatal(err)
			}
			total++
		}
	}
	t.Fatal("Balance did not converge")
	return nil, 0
}

func TestScaleUpBalancesWithMaxSkewOneAndMinimalMoves(t *testing.T) {
	for _, tc := range []struct{ shards, from, to int }{{8, 3, 5}, {16, 1, 4}, {5, 2, 3}, {64, 3, 7}} {
		t.Run(fmt.Sprintf("%d shards %d to %d actives", tc.shards, tc.from, tc.to), func(t *testing.T) {
			top, err := Initial("demo", members(tc.from, 1), tc.shards, 2000)
			if err != nil {
				t.Fatal(err)
			}
			// New actives join after the existing members.
			for i := tc.from; i < tc.to; i++ {
				top.Members = append(top.Members, Member{Name: fmt.Sprintf("new-%d", i), Role: Active})
			}
			got, moves := apply(t, top, nil, 2)
			if s := skew(ownerCounts(got), nil); s > 1 {
				t.Fatalf("skew %d after balancing: %v", s, ownerCounts(got))
			}
			// Minimal: each new member needs floor(shards/to) shards at least.
			if want := (tc.shards / tc.to) * (tc.to - tc.from); moves > want+(tc.to-tc.from) {
				t.Fatalf("%d moves, expected about %d", moves, want)
			}
			if got.Epoch != top.Epoch+uint64(moves) {
				t.Fatalf("epoch %d after %d moves from %d", got.Epoch, moves, top.Epoch)
			}
		})
	}
}

func TestScaleDownEmptiesTheLeavingMembers(t *testing.T) {
	top, err := Initial("demo", members(5, 1), 16, 2000)
	if err != nil {
		t.Fatal(err)
	}
	leaving := []string{"n-3", "n-4"}
	got, _ := apply(t, top, leaving, 1)
	counts := ownerCounts(got)
	for _, n := range leaving {
		if counts[n] != 0 {
			t.Fatalf("%s still owns %d shards", n, counts[n])
		}
	}
	if s := skew(counts, leaving); s > 1 {
		t.Fatalf("skew %d over the remaining members: %v", s, counts)
	}
}

func TestWithMoveKeepsTheOldOwnerAsFollowerAndBumpsTheEpoch(t *testing.T) {
	top, _ := Initial("demo", members(2, 1), 2, 2000)
	next, err := WithMove(top, Move{Shard: 0, From: "n-0", To: "n-1"})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := next.Shard(0)
	if s.Owner != "n-1" || !slices.Contains(s.Followers, "n-0") || next.Epoch != top.Epoch+1 {
		t.Fatalf("after move: %+v epoch %d", s, next.Epoch)
	}
	if orig, _ := top.Shard(0); orig.Owner != "n-0" {
		t.Fatal("WithMove mutated its input")
	}
	if _, err := WithMove(top, Move{Shard: 0, From: "n-1", To: "n-0"}); err == nil {
		t.Fatal("a move from a non-owner must be refused")
	}
}

func TestAddDrainRemoveShard(t *testing.T) {
	base := &Topology{Cluster: "c", Epoch: 4, LeaseMillis: 1000, BaseShards: 3,
		Members: []Member{{Name: "a", Role: Active}, {Name: "b", Role: Active}, {Name: "s", Role: Standby}},
		Shards:  []Shard{{ID: 0, Owner: "a", Followers: []string{"s"}}, {ID: 1, Owner: "b", Followers: []string{"s"}}, {ID: 2, Owner: "a", Followers: []string{"s"}}}}
	if _, err := AddShard(base, 2, nil); err == nil {
		t.Fatal("AddShard accepted a base shard id")
	}
	added, err := AddShard(base, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := added.Shard(3)
	if s.Owner != "b" || !slices.Equal(s.Followers, []string{"s"}) || added.Epoch != 5 {
		t.Fatalf("added shard %+v at epoch %d, want owner b (least loaded) followed by s at epoch 5", s, added.Epoch)
	}
	if len(base.Shards) != 3 {
		t.Fatal("AddShard modified its input")
	}
	// a and b own two each: the tie goes to the lower load.
	again, err := AddShard(added, 4, map[string]float64{"a": 1, "b": 9})
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := again.Shard(4); s.Owner != "a" {
		t.Fatalf("tie broken towards %s, want the less loaded a", s.Owner)
	}
	if _, err := WithDraining(again, 1); err == nil {
		t.Fatal("a base shard was marked draining")
	}
	if _, err := WithoutShard(again, 3); err == nil {
		t.Fatal("a shard that is not draining was removed")
	}
	drained, err := WithDraining(again, 3)
	if err != nil {
		t.Fatal(err)
	}
	// A draining shard still counts (it is owned until removed): a owns
	// 0, 2 and 4, b owns 1 and draining 3.
	if got := LeastLoadedActive(drained, map[string]float64{"b": 100}); got != "b" {
		t.Fatalf("least loaded with b's shard draining = %s, want b (two shards against three)", got)
	}
	gone, err := WithoutShard(drained, 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := gone.Shard(3); ok || gone.Epoch != drained.Epoch+1 {
		t.Fatalf("shard 3 still present or epoch not bumped: %+v", gone)
	}
}
