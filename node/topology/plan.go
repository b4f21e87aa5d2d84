package topology

import (
	"cmp"
	"fmt"
	"slices"
)

// Planning functions: pure computations the operator uses to decide the
// next topology. They never mutate their input.

// Move is one shard changing owner.
type Move struct {
	Shard uint16 `json:"shard"`
	From  string `json:"from"`
	To    string `json:"to"`
}

// Initial places base shards 0..baseShards-1 round-robin over the active
// members (in member order) and makes every standby follow every shard, so
// any standby can be promoted for any shard.
func Initial(cluster string, members []Member, baseShards int, leaseMillis int64) (*Topology, error) {
	actives := names(members, Active)
	if len(actives) == 0 {
		return nil, fmt.Errorf("topology: no active member to own shards")
	}
	t := &Topology{Cluster: cluster, Epoch: 1, LeaseMillis: leaseMillis, BaseShards: baseShards, Members: slices.Clone(members)}
	standbys := names(members, Standby)
	for i := range baseShards {
		t.Shards = append(t.Shards, Shard{ID: uint16(i), Owner: actives[i%len(actives)], Followers: slices.Clone(standbys)})
	}
	return t, t.Validate()
}

// Balance plans owner moves so that no active member owns more than one
// shard above any other (max skew 1), moving as few shards as possible:
// shards leave the most loaded owners (highest shard ids first) for the
// least loaded. Members in leaving own nothing afterwards. At most limit
// moves are returned (0 means no limit); the caller applies them and plans
// again.
func Balance(t *Topology, leaving []string, limit int) []Move {
	var targets []string
	for _, m := range t.Members {
		if m.Role == Active && !slices.Contains(leaving, m.Name) {
			targets = append(targets, m.Name)
		}
	}
	if len(targets) == 0 {
		return nil
	}
	load := map[string][]uint16{}
	for _, n := range targets {
		load[n] = nil
	}
	var orphans []uint16 // shards whose owner is leaving or gone
	for _, s := range t.Shards {
		if _, ok := load[s.Owner]; ok {
			load[s.Owner] = append(load[s.Owner], s.ID)
		} else {
			orphans = append(orphans, s.ID)
		}
	}
	owner := func(id uint16) string { s, _ := t.Shard(id); return s.Owner }
	// least returns the target with the fewest shards (ties: first in
	// member order), most the one with the most.
	least := func() string {
		return slices.MinFunc(targets, func(a, b string) int { return cmp.Compare(len(load[a]), len(load[b])) })
	}
	most := func() string {
		return slices.MaxFunc(targets, func(a, b string) int {
			// MaxFunc returns the first maximum; prefer the later member on
			// ties so moves go from high ordinals to low ones.
			if c := cmp.Compare(len(load[a]), len(load[b])); c != 0 {
				return c
			}
			return -1
		})
	}
	var moves []Move
	full := func() bool { return limit > 0 && len(moves) >= limit }
	slices.Sort(orphans)
	for _, id := range orphans {
		if full() {
			return moves
		}
		to := least()
		moves = append(moves, Move{Shard: id, From: owner(id), To: to})
		load[to] = append(load[to], id)
	}
	for !full() {
		from, to := most(), least()
		if len(load[from])-len(load[to]) <= 1 {
			break
		}
		ids := load[from]
		slices.Sort(ids)
		id := ids[len(ids)-1]
		load[from] = ids[:len(ids)-1]
		load[to] = append(load[to], id)
		moves = append(moves, Move{Shard: id, From: from, To: to})
	}
	return moves
}

// WithMove returns a copy of t in which move's shard is owned by move.To at
// epoch+1. The old owner becomes a follower when it is still a member, so
// it can serve as a source until it is dropped; the new owner stops
// following.
func WithMove(t *Topology, move Move) (*Topology, error) {
	next := t.Clone()
	i := slices.IndexFunc(next.Shards, func(s Shard) bool { return s.ID == move.Shard })
	if i < 0 {
		return nil, fmt.Errorf("topology: shard %d does not exist", move.Shard)
	}
	s := &next.Shards[i]
	if s.Owner != move.From {
		return nil, fmt.Errorf("topology: shard %d is owned by %q, not %q", move.Shard, s.Owner, move.From)
	}
	s.Followers = slices.DeleteFunc(s.Followers, func(f string) bool { return f == move.To })
	if _, ok := next.Member(move.From); ok && !slices.Contains(s.Followers, move.From) {
		s.Followers = append(s.Followers, move.From)
	}
	s.Owner = move.To
	next.Epoch++
	return next, next.Validate()
}

// Clone returns a deep copy of t.
func (t *Topology) Clone() *Topology {
	c := *t
	c.Members = slices.Clone(t.Members)
	c.Shards = make([]Shard, len(t.Shards))
	for i, s := range t.Shards {
		c.Shards[i] = s
		c.Shards[i].Followers = slices.Clone(s.Followers)
	}
	return &c
}

func names(members []Member, role Role) []string {
	var out []string
	for _, m := range members {
		if m.Role == role {
			out = append(out, m.Name)
		}
	}
	return out
}

// AddShard returns a copy of t at epoch+1 with a new added shard id owned
// by the least loaded active member (see LeastLoadedActive) and followed
// by every standby. load, when not nil, breaks ties between
// owners of as many shards (for example their event rates). id must be at
// or above BaseShards and not present.
func AddShard(t *Topology, id uint16, load map[string]float64) (*Topology, error) {
	if int(id) < t.BaseShards {
		return nil, fmt.Errorf("topology: shard %d is a base shard, added shards start at %d", id, t.BaseShards)
	}
	if _, ok := t.Shard(id); ok {
		return nil, fmt.Errorf("topology: shard %d already exists", id)
	}
	owner := LeastLoadedActive(t, load)
	if owner == "" {
		return nil, fmt.Errorf("topology: no active member to own shard %d", id)
	}
	next := t.Clone()
	next.Shards = append(next.Shards, Shard{ID: id, Owner: owner, Followers: names(t.Members, Standby)})
	slices.SortFunc(next.Shards, func(a, b Shard) int { return cmp.Compare(a.ID, b.ID) })
	next.Epoch++
	return next, next.Validate()
}

// LeastLoadedActive is the active member owning the fewest shards;
// ties go to the lowest load (when load is not nil), then to the first in
// member order. "" when there is no active member. Draining shards count
// (they are owned until removed), as in Balance, so a shard added here
// never makes the cluster unbalanced.
func LeastLoadedActive(t *Topology, load map[string]float64) string {
	owned := map[string]int{}
	for _, s := range t.Shards {
		owned[s.Owner]++
	}
	best := ""
	for _, m := range t.Members {
		if m.Role != Active {
			continue
		}
		switch {
		case best == "":
		case owned[m.Name] < owned[best]:
		case owned[m.Name] == owned[best] && load[m.Name] < load[best]:
		default:
			continue
		}
		best = m.Name
	}
	return best
}

// WithDraining returns a copy of t at epoch+1 in which added shard id is
// draining.
func WithDraining(t *Topology, id uint16) (*Topology, error) {
	if int(id) < t.BaseShards {
		return nil, fmt.Errorf("topology: shard %d is a base shard and never drains", id)
	}
	next := t.Clone()
	i := slices.IndexFunc(next.Shards, func(s Shard) bool { return s.ID == id })
	if i < 0 {
		return nil, fmt.Errorf("topology: shard %d does not exist", id)
	}
	next.Shards[i].Draining = true
	next.Epoch++
	return next, next.Validate()
}

// WithoutShard returns a copy of t at epoch+1 without the draining shard
// id (retention emptied it). Only a draining shard can be removed, so a
// shard that still takes events is never dropped by mistake.
func WithoutShard(t *Topology, id uint16) (*Topology, error) {
	s, ok := t.Shard(id)
	if !ok {
		return nil, fmt.Errorf("topology: shard %d does not exist", id)
	}
	if !s.Draining {
		return nil, fmt.Errorf("topology: shard %d is not draining and cannot be removed", id)
	}
	next := t.Clone()
	next.Shards = slices.DeleteFunc(next.Shards, func(s Shard) bool { return s.ID == id })
	next.Epoch++
	return next, next.Validate()
}
