package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	redexadapter "github.com/purplerain/mesh-operator/engine/adapter/redex"
	"github.com/purplerain/mesh-operator/engine/bus"
	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/rules"
	"github.com/purplerain/mesh-operator/engine/subnet"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/topology"
)

// Node is one mesh node: its view of the cluster and its data plane.
type Node struct {
	name   string
	now    func() time.Time
	logger *slog.Logger

	// The data plane (dataplane.go): every local shard log (owned or
	// followed) lives in logs; the node bus holds exactly the owned ones.
	logs       *redexadapter.Adapter
	bus        *bus.Bus
	ackStandby bool
	replMu     sync.Mutex
	replicas   ReplicaWaiter
	// rules are the behaviour rules every ingest passes before anything is
	// appended; never nil (an empty set accepts everything).
	rules *rules.Engine
	// subnet is the node's place in the subnet hierarchy, nil when the
	// configuration assigns none; subnetErr says why an assignment failed.
	subnet    *subnet.ID
	subnetErr error

	// Replication followers (followers.go), one per followed shard; guarded
	// by applyMu. clusterKey (written under applyMu and mu, read under
	// either) signs the followers' tokens; prevClusterKey is the one it
	// replaced (a credential rotation), kept to open keys sealed under it.
	clusterKey     *identity.KeyPair
	prevClusterKey *identity.KeyPair
	syncBeforeAck  bool
	followers      map[uint16]*follower
	ownerKeys      ownerTrust // TrustOwnersSignedBy (followers.go)

	// daemons are the hosted daemon instances (daemons.go).
	daemons *daemonTable

	// load samples the owned shards for autoscaling (status.go); the
	// sampler goroutine stops when stopLoad closes.
	load      loadSampler
	stopLoad  chan struct{}
	loadDone  chan struct{}
	closeOnce sync.Once

	// appendGate orders appends with topology changes: Ingest holds it
	// (read) from its writable check until its events are in the log,
	// ApplyTopology (write) while it installs a new epoch. So no fence or
	// ownership change falls between an ingest's check and its append,
	// and an ingest refused for one appended nothing (dataplane.go).
	appendGate sync.RWMutex

	// applyMu serialises topology changes, including the bus shard changes
	// that follow them; mu guards the fields below.
	applyMu    sync.Mutex
	mu         sync.RWMutex
	topo       *topology.Topology
	leaseUntil time.Time
	// busEpoch is the epoch whose owned, routable shards the node bus
	// holds: set once syncShards finished for it, so a draining shard is
	// reported as such (ShardStatus.Draining) only after the bus released
	// it and every event the node may still acknowledge on it is in its
	// log.
	busEpoch uint64
	// draining refuses every write (as "moving"): the node is leaving.
	draining bool
}

// Options configures a Node.
type Options struct {
	// Name is this node's member name (the pod name).
	Name string
	// Now is the clock leases are measured on. Default time.Now, whose
	// readings carry a monotonic component, so wall-clock jumps do not
	// stretch a lease.
	Now func() time.Time
	// Config is the cluster-wide configuration (storage, retention, ack
	// policy). Nil means memory storage and ackPolicy Leader.
	Config *nodeconfig.Config
	// Replicas is what ackPolicy Standby waits on; required with it. Set
	// it later with SetReplicas when the replication server needs the node
	// first.
	Replicas ReplicaWaiter
	// ClusterKey signs the replication tokens this node presents to shard
	// owners; nil disables following.
	ClusterKey *identity.KeyPair
	// Rules are the behaviour rules evaluated at ingest; nil means none.
	// Replace them later with SetRules.
	Rules *rules.Set
	// RulesClock is the monotonic clock of the rules' rate windows; nil
	// means real time. Tests inject one.
	RulesClock func() time.Duration
	// Subnet is the node's subnet (assigned from its pod labels by the
	// runtime); nil means the configuration assigns none. SubnetError is
	// why the configured assignment failed (reported in status; the node
	// serves without a subnet, as nothing filters by subnet yet).
	Subnet      *subnet.ID
	SubnetError error
	// DaemonKinds builds the daemons the configuration declares; nil
	// means the built-in kinds (engine/compute/daemons).
	DaemonKinds *compute.Kinds
	Logger      *slog.Logger
}

// New returns a node that holds no topology yet. Close releases it.
func New(opts Options) (*Node, error) {
	if opts.Name == "" {
		return nil, fmt.Errorf("node: name is required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	n := &Node{name: opts.Name, now: opts.Now, logger: opts.Logger, replicas: opts.Replicas,
		clusterKey: opts.ClusterKey, followers: map[uint16]*follower{},
		rules: rules.NewEngine(opts.Rules, rules.Options{Now: opts.RulesClock}), subnet: opts.Subnet, subnetErr: opts.SubnetError}
	var (
		decls   []nodeconfig.Daemon
		snapDir string
	)
	if opts.Config != nil {
		decls = opts.Config.Daemons
		if opts.Config.Storage.Mode == "Disk" {
			snapDir = opts.Config.Storage.Dir
		}
	}
	dt, err := newDaemonTable(opts.DaemonKinds, decls, snapDir)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	n.daemons = dt
	n.ackStandby = opts.Config != nil && opts.Config.AckPolicy == "Standby"
	// Under ackPolicy Standby an ack promises the event survives the
	// owner's loss, so followers sync before they acknowledge.
	n.syncBeforeAck = n.ackStandby && opts.Config.Storage.Mode == "Disk"
	n.logs = redexadapter.New(storeOptions(opts.Config))
	if err := n.openStoredLogs(opts.Config); err != nil {
		_ = n.logs.Close()
		return nil, fmt.Errorf("node: %w", err)
	}
	b, err := newBus(n.logs, opts.Logger)
	if err != nil {
		_ = n.logs.Close()
		return nil, fmt.Errorf("node: start bus: %w", err)
	}
	n.bus = b
	n.stopLoad, n.loadDone = make(chan struct{}), make(chan struct{})
	go n.runLoadSampler(n.stopLoad, n.loadDone)
	return n, nil
}

// Close drains the node bus and closes every log. A lossy drain is
// returned as an error (and must be logged loudly by the caller).
func (n *Node) Close() error {
	n.closeOnce.Do(func() { close(n.stopLoad) })
	<-n.loadDone
	n.closeDaemons()
	n.closeFollowers()
	return errors.Join(n.bus.Close(), n.logs.Close())
}

// SetReplicas sets what ackPolicy Standby waits on.
func (n *Node) SetReplicas(r ReplicaWaiter) {
	n.replMu.Lock()
	defer n.replMu.Unlock()
	n.replicas = r
}

// SetRules atomically replaces the behaviour rules (nil: none). Rules whose
// specification is unchanged keep their rate windows, so a reload does not
// hand out a fresh budget.
func (n *Node) SetRules(set *rules.Set) { n.rules.Replace(set) }

// Rules is the current rule set (never nil); its Hash identifies it.
func (n *Node) Rules() *rules.Set {
	if s := n.rules.Set(); s != nil {
		return s
	}
	return &rules.Set{}
}

// Subnet is the node's subnet; ok is false when none is assigned, and err
// says why a configured assignment failed.
func (n *Node) Subnet() (id subnet.ID, ok bool, err error) {
	if n.subnet == nil {
		return 0, false, n.subnetErr
	}
	return *n.subnet, true, nil
}

// ClusterKey is the key the node signs its replication tokens with (nil:
// none).
func (n *Node) ClusterKey() *identity.KeyPair {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.clusterKey
}

// ClusterKeys are the cluster keys whose private half the node holds: the
// signing key first, then the one it replaced, if any.
func (n *Node) ClusterKeys() []*identity.KeyPair {
	n.mu.RLock()
	defer n.mu.RUnlock()
	var out []*identity.KeyPair
	for _, k := range []*identity.KeyPair{n.clusterKey, n.prevClusterKey} {
		if k != nil {
			out = append(out, k)
		}
	}
	return out
}

// SetClusterKey makes k the key replication tokens are signed with from
// now on (a credential rotation: peers already trust it). Replication
// streams already open keep running; their next reconnection presents a
// token signed with k.
func (n *Node) SetClusterKey(k *identity.KeyPair) {
	n.applyMu.Lock()
	defer n.applyMu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.clusterKey != nil && k.PublicKey().Equal(n.clusterKey.PublicKey()) {
		return
	}
	n.prevClusterKey, n.clusterKey = n.clusterKey, k
}

// Name is the node's member name.
func (n *Node) Name() string { return n.name }

// ApplyTopology validates t and makes it current. The same epoch renews the
// lease; an older epoch is refused with topology.ErrStaleEpoch.
func (n *Node) ApplyTopology(t *topology.Topology) error {
	if err := t.Validate(); err != nil {
		return fmt.Errorf("invalid topology: %w", err)
	}
	n.applyMu.Lock()
	defer n.applyMu.Unlock()
	// A new epoch waits for ingests between check and append (a lease
	// renewal does not: it fences and moves nothing); applyMu keeps the
	// epoch from changing between this look and the install.
	cur := n.Topology()
	gate := cur == nil || cur.Epoch != t.Epoch
	if gate {
		n.appendGate.Lock()
	}
	n.mu.Lock()
	if err := n.topo.CheckNewer(t); err != nil {
		n.mu.Unlock()
		if gate {
			n.appendGate.Unlock()
		}
		return err
	}
	changed := n.topo == nil || n.topo.Epoch != t.Epoch
	n.topo = t
	n.leaseUntil = n.now().Add(t.Lease())
	n.mu.Unlock()
	if gate {
		n.appendGate.Unlock()
	}
	if !changed {
		return nil // a lease renewal
	}
	// Writes for shards this node no longer owns are already refused
	// (CheckWritable reads the new topology); now drain and release them.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Followers first: a shard this node now owns must have no follower
	// appending to its log when the bus takes it over.
	// Daemons last: a shard's log is open (and owned or followed) before
	// a host is fed from it.
	// The bus holds the owned shards that take new events: a draining
	// shard leaves it (keyless events go elsewhere) while the node keeps
	// owning, serving and replicating its log.
	followErr := n.syncFollowers(t)
	busErr := n.syncShards(ctx, busView(t))
	if busErr == nil {
		n.mu.Lock()
		n.busEpoch = t.Epoch
		n.mu.Unlock()
	}
	return errors.Join(followErr, busErr, n.syncDaemons(t))
}

// busView is t as the node bus must see it: draining shards have no
// owner, so syncShards releases them from the bus. Only syncShards gets
// it; everything else (ownership checks, poll, replication) reads t.
func busView(t *topology.Topology) *topology.Topology {
	if len(t.Routable()) == len(t.Shards) {
		return t
	}
	v := t.Clone()
	for i := range v.Shards {
		if v.Shards[i].Draining {
			v.Shards[i].Owner = ""
		}
	}
	return v
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

// leaseDeadline is when the current lease ends (the zero time before the
// first topology). Ingest reads it under appendGate, so it is the lease of
// the epoch its events were appended in (dataplane.go).
func (n *Node) leaseDeadline() time.Time {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.topo == nil {
		return time.Time{}
	}
	return n.leaseUntil
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
	if s.Fenced {
		return ErrShardMoving
	}
	if n.draining {
		return ErrShardMoving
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
