package group

import (
	"fmt"
	"sort"

	"github.com/purplerain/mesh-operator/engine/compute"
)

// Strategy chooses which replica serves an event.
type Strategy uint8

const (
	// RoundRobin cycles over the healthy replicas in index order.
	RoundRobin Strategy = iota
	// ConsistentHash maps the event key onto a ring of replica identities
	// (virtual nodes), so a key stays on its replica while it is healthy.
	ConsistentHash
	// LeastLoad picks the healthy replica that has processed the fewest
	// events (ties: the lowest index).
	LeastLoad
)

// vnodes is the number of ring points per replica for ConsistentHash.
const vnodes = 64

// ReplicaConfig configures a ReplicaGroup.
type ReplicaConfig struct {
	Name     string
	Kind     string
	Config   []byte
	Replicas int
	Seed     [32]byte
	Strategy Strategy
	// Host configures each replica's host; Sparse is forced on, since a
	// replica sees only the events routed to it.
	Host compute.HostConfig
}

// Replica describes one replica.
type Replica struct {
	Index     int
	Identity  Identity
	Node      string
	Healthy   bool
	Processed uint64
	// Spawns counts how many times this replica was (re)started.
	Spawns int
}

type replica struct {
	index    int
	identity Identity
	node     string
	healthy  bool
	host     *compute.Host
	spawns   int
}

type ringPoint struct {
	hash  uint64
	index int
}

// ReplicaGroup is N copies of a daemon sharing the events of a shard.
type ReplicaGroup struct {
	cfg      ReplicaConfig
	kinds    *compute.Kinds
	nodes    *nodeSet
	replicas []*replica
	ring     []ringPoint
	rr       uint64
}

// NewReplicaGroup starts cfg.Replicas replicas spread over nodes.
func NewReplicaGroup(cfg ReplicaConfig, kinds *compute.Kinds, nodes []Node) (*ReplicaGroup, error) {
	ns, err := newNodeSet(nodes)
	if err != nil {
		return nil, err
	}
	cfg.Host.Sparse = true
	g := &ReplicaGroup{cfg: cfg, kinds: kinds, nodes: ns}
	if err := g.ScaleTo(cfg.Replicas); err != nil {
		return nil, err
	}
	return g, nil
}

// Replicas describes every replica in index order.
func (g *ReplicaGroup) Replicas() []Replica {
	out := make([]Replica, len(g.replicas))
	for i, r := range g.replicas {
		out[i] = Replica{Index: r.index, Identity: r.identity, Node: r.node, Healthy: r.healthy, Processed: r.host.Processed(), Spawns: r.spawns}
	}
	return out
}

// Host returns replica index's host.
func (g *ReplicaGroup) Host(index int) *compute.Host { return g.replicas[index].host }

// ScaleTo grows or shrinks the group to n replicas. n < 1 is rejected.
// New replicas take the next indices (identities from the seed) and are
// placed to spread failure domains; shrinking removes the highest indices.
func (g *ReplicaGroup) ScaleTo(n int) error {
	if n < 1 {
		return fmt.Errorf("%w: replica count must be at least 1, got %d", ErrInvalidConfig, n)
	}
	for len(g.replicas) > n {
		g.replicas = g.replicas[:len(g.replicas)-1]
	}
	for i := len(g.replicas); i < n; i++ {
		node, err := g.nodes.place(g.occupied(-1))
		if err != nil {
			return fmt.Errorf("group: place replica %d: %w", i, err)
		}
		r := &replica{index: i, identity: DeriveIdentity(g.cfg.Seed, i)}
		if err := g.spawn(r, node); err != nil {
			return err
		}
		g.replicas = append(g.replicas, r)
	}
	g.rebuildRing()
	return nil
}

func (g *ReplicaGroup) spawn(r *replica, node string) error {
	d, err := g.kinds.New(g.cfg.Kind, g.cfg.Name, g.cfg.Config)
	if err != nil {
		return fmt.Errorf("group: spawn replica %d: %w", r.index, err)
	}
	r.host = compute.NewHost(g.cfg.Name, g.cfg.Kind, g.cfg.Config, d, compute.CursorAt(0), g.cfg.Host)
	r.node, r.healthy = node, true
	r.spawns++
	return nil
}

func (g *ReplicaGroup) occupied(skip int) []string {
	var out []string
	for _, r := range g.replicas {
		if r.index != skip && r.healthy {
			out = append(out, r.node)
		}
	}
	return out
}

func (g *ReplicaGroup) rebuildRing() {
	g.ring = g.ring[:0]
	for _, r := range g.replicas {
		base := r.identity.Hash()
		for v := uint64(0); v < vnodes; v++ {
			g.ring = append(g.ring, ringPoint{hash: mix64(base + v*0x9e3779b97f4a7c15), index: r.index})
		}
	}
	sort.Slice(g.ring, func(i, j int) bool {
		if g.ring[i].hash != g.ring[j].hash {
			return g.ring[i].hash < g.ring[j].hash
		}
		return g.ring[i].index < g.ring[j].index
	})
}

// Route returns the index of the replica that serves key.
func (g *ReplicaGroup) Route(key []byte) (int, error) {
	switch g.cfg.Strategy {
	case ConsistentHash:
		h := hashKey(key)
		i := sort.Search(len(g.ring), func(i int) bool { return g.ring[i].hash >= h })
		for k := 0; k < len(g.ring); k++ {
			p := g.ring[(i+k)%len(g.ring)]
			if g.replicas[p.index].healthy {
				return p.index, nil
			}
		}
	case LeastLoad:
		best := -1
		for _, r := range g.replicas {
			if r.healthy && (best < 0 || r.host.Processed() < g.replicas[best].host.Processed()) {
				best = r.index
			}
		}
		if best >= 0 {
			return best, nil
		}
	default:
		for k := 0; k < len(g.replicas); k++ {
			r := g.replicas[(g.rr+uint64(k))%uint64(len(g.replicas))]
			if r.healthy {
				g.rr = uint64(r.index) + 1
				return r.index, nil
			}
		}
	}
	return -1, ErrNoHealthyMember
}

// Deliver routes ev by its key and applies it on the chosen replica.
func (g *ReplicaGroup) Deliver(ev compute.Event) (int, [][]byte, error) {
	i, err := g.Route(ev.Key)
	if err != nil {
		return -1, nil, err
	}
	out, err := g.replicas[i].host.Deliver(ev)
	return i, out, err
}

// OnNodeFailure marks node failed and re-spawns each replica on it on a
// healthy node that holds no other replica, keeping its index and identity (with a fresh daemon: a
// replica's state is not carried over). A replica with nowhere to go stays
// unhealthy until OnNodeRecovery.
func (g *ReplicaGroup) OnNodeFailure(node string) error {
	if err := g.nodes.set(node, false); err != nil {
		return err
	}
	for _, r := range g.replicas {
		if r.node == node {
			r.healthy = false
		}
	}
	for _, r := range g.replicas {
		if r.healthy {
			continue
		}
		target, err := g.nodes.placeExclusive(g.occupied(r.index))
		if err != nil {
			continue
		}
		if err := g.spawn(r, target); err != nil {
			return err
		}
	}
	return nil
}

// OnNodeRecovery marks node healthy and re-spawns every unhealthy replica
// that was left on it, with the same identity.
func (g *ReplicaGroup) OnNodeRecovery(node string) error {
	if err := g.nodes.set(node, true); err != nil {
		return err
	}
	for _, r := range g.replicas {
		if !r.healthy && r.node == node {
			if err := g.spawn(r, node); err != nil {
				return err
			}
		}
	}
	return nil
}
