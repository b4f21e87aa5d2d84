package node

import (
	"fmt"
	"sync"
	"time"

	"github.com/purplerain/mesh-operator/node/topology"
)

// Node is one mesh node's view of the cluster.
type Node struct {
	name string
	now  func() time.Time

	mu         sync.RWMutex
	topo       *topology.Topology
	leaseUntil time.Time
}

// Options configures a Node.
type Options struct {
	// Name is this node's member name (the pod name).
	Name string
	// Now is the clock leases are measured on. Default time.Now, whose
	// readings carry a monotonic component, so wall-clock jumps do not
	// stretch a lease.
	Now func() time.Time
}

// New returns a node that holds no topology yet.
func New(opts Options) (*Node, error) {
	if opts.Name == "" {
		return nil, fmt.Errorf("node: name is required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Node{name: opts.Name, now: opts.Now}, nil
}

// Name is the node's member name.
func (n *Node) Name() string { return n.name }

// ApplyTopology validates t and makes it current. The same epoch renews the
// lease; an older epoch is refused with topology.ErrStaleEpoch.
func (n *Node) ApplyTopology(t *topology.Topology) error {
	if err := t.Validate(); err != nil {
		return fmt.Errorf("invalid topology: %w", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.topo.CheckNewer(t); err != nil {
		return err
	}
	// TODO(issue 7): acquire and release shards in the node bus when the
	// set this node owns or follows changes.
	n.topo = t
	n.leaseUntil = n.now().Add(t.Lease())
	return nil
}

// Topology returns the current topology, nil before the first push. The
// caller must not modify it.
func (n *Node) Topology() *topology.Topology {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.topo
}

// Role is the node's role in the current topology ("" when it has none or
// is not a member).
func (n *Node) Role() topology.Role {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.topo == nil {
		return ""
	}
	m, _ := n.topo.Member(n.name)
	return m.Role
}

// LeaseRemaining is how long the node may still accept writes; zero or
// negative once the lease expired.
func (n *Node) LeaseRemaining() time.Duration {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.topo == nil {
		return 0
	}
	return n.leaseUntil.Sub(n.now())
}

// CheckWritable says whether this node may accept a write for shard now.
func (n *Node) CheckWritable(shard uint16) error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.topo == nil {
		return ErrNoTopology
	}
	s, ok := n.topo.Shard(shard)
	if !ok || s.Owner != n.name {
		e := &NotOwnerError{Shard: shard}
		if ok {
			e.Owner = s.Owner
			if m, found := n.topo.Member(s.Owner); found {
				e.Data = m.Data
			}
		}
		return e
	}
	if !n.now().Before(n.leaseUntil) {
		return ErrLeaseExpired
	}
	return nil
}

// Ready says whether the node serves its role: it has a topology that
// names it, and, if it owns shards, a valid lease.
func (n *Node) Ready() error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.topo == nil {
		return ErrNoTopology
	}
	if _, ok := n.topo.Member(n.name); !ok {
		return fmt.Errorf("node: %s is not a member of topology epoch %d", n.name, n.topo.Epoch)
	}
	if len(n.topo.OwnedBy(n.name)) > 0 && !n.now().Before(n.leaseUntil) {
		return ErrLeaseExpired
	}
	return nil
}
