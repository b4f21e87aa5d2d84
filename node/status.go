package node

import (
	"context"
	"fmt"
	"slices"

	"github.com/purplerain/mesh-operator/node/replication"
	"github.com/purplerain/mesh-operator/node/topology"
)

// ShardStatus is one local shard as the operator sees it in status: the
// log's range, and for an owner how far its followers got, for a follower
// how far behind the owner it is. The operator promotes the follower with
// the highest Next and cuts a handoff over when the new owner's Next
// equals the fenced owner's.
type ShardStatus struct {
	ID     uint16 `json:"id"`
	Role   string `json:"role"` // "owner" or "follower"
	Fenced bool   `json:"fenced,omitempty"`
	// First and Next bound the local log: entries [First, Next).
	First uint64 `json:"first"`
	Next  uint64 `json:"next"`
	// Followers (owner): what each follower acknowledged.
	Followers []replication.FollowerPosition `json:"followers,omitempty"`
	// Lag, Connected and Error (follower): the replication stream's state.
	Lag       uint64 `json:"lag,omitempty"`
	Connected bool   `json:"connected,omitempty"`
	Error     string `json:"error,omitempty"`
	// Daemons is how many daemon instances run on the shard here, and
	// DaemonNext the lowest next seq among those whose feed runs: when it
	// equals Next every daemon state here is the fold of the whole local
	// log. A handoff cuts over only then (package orchestrate).
	Daemons    int    `json:"daemons,omitempty"`
	DaemonNext uint64 `json:"daemonNext,omitempty"`
}

// PositionReporter is the owner side of replication as status sees it.
type PositionReporter interface {
	FollowerPositions(shard uint16) []replication.FollowerPosition
}

// ShardStatuses reports every shard this node owns or follows in the
// current topology.
func (n *Node) ShardStatuses() []ShardStatus {
	t := n.Topology()
	if t == nil {
		return nil
	}
	n.replMu.Lock()
	reporter, _ := n.replicas.(PositionReporter)
	n.replMu.Unlock()

	var out []ShardStatus
	for _, id := range t.OwnedBy(n.name) {
		s, _ := t.Shard(id)
		st := ShardStatus{ID: id, Role: "owner", Fenced: s.Fenced}
		n.fillRange(&st)
		if reporter != nil {
			st.Followers = reporter.FollowerPositions(id)
		}
		out = append(out, st)
	}
	followers := map[uint16]replication.FollowerStatus{}
	for _, fs := range n.FollowerStatuses() {
		followers[fs.Shard] = fs
	}
	for _, id := range t.FollowedBy(n.name) {
		st := ShardStatus{ID: id, Role: "follower"}
		n.fillRange(&st)
		if fs, ok := followers[id]; ok {
			st.Lag, st.Connected = fs.Lag, fs.Connected
			if fs.LastErr != nil {
				st.Error = fs.LastErr.Error()
			}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b ShardStatus) int { return int(a.ID) - int(b.ID) })
	return out
}

func (n *Node) fillRange(st *ShardStatus) {
	// Daemon progress first: read before the log's range, it can only be
	// behind it, never ahead.
	count, next, ok := n.daemonProgress(st.ID)
	if l, err := n.logs.Log(st.ID); err == nil {
		st.First, st.Next = l.FirstSeq(), l.NextSeq()
	}
	st.Daemons = count
	if ok {
		st.DaemonNext = next
	} else if count > 0 {
		// Every feed halted: nothing to wait for (see daemonProgress).
		st.DaemonNext = st.Next
	}
}

// Promote applies t, in which this node must own every shard in shards (a
// standby taking over a failed owner's shards at a new epoch). The
// operator picked this node because its logs are the furthest along of the
// followers it could reach; Promote checks the topology says so and stops
// following those shards before owning them.
func (n *Node) Promote(t *topology.Topology, shards []uint16) error {
	for _, id := range shards {
		s, ok := t.Shard(id)
		if !ok || s.Owner != n.name {
			return fmt.Errorf("promote: topology epoch %d does not make %s the owner of shard %d", t.Epoch, n.name, id)
		}
	}
	return n.ApplyTopology(t)
}

// DrainStatus answers a drain request.
type DrainStatus struct {
	// Owned is how many shards the node still owns; the operator moves
	// them away, and the node is empty at 0.
	Owned int `json:"owned"`
	// Flushed says every event accepted before the drain is stored.
	Flushed bool `json:"flushed"`
}

// Drain stops the node accepting writes (refused as "moving", so clients
// go elsewhere once the operator moved the shards) and flushes what it
// accepted. Repeating it is harmless.
func (n *Node) Drain(ctx context.Context) (DrainStatus, error) {
	n.mu.Lock()
	n.draining = true
	owned := 0
	if n.topo != nil {
		owned = len(n.topo.OwnedBy(n.name))
	}
	n.mu.Unlock()
	if err := n.bus.Flush(ctx); err != nil {
		return DrainStatus{Owned: owned}, fmt.Errorf("drain: %w", err)
	}
	return DrainStatus{Owned: owned, Flushed: true}, nil
}
