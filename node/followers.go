package node

import (
	"crypto/ed25519"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/redex"
	"github.com/purplerain/mesh-operator/node/replication"
	"github.com/purplerain/mesh-operator/node/topology"
)

// follower is one running replication follower and where it points.
type follower struct {
	owner string // owner's wire address
	f     *replication.Follower
}

// ownerTrust holds the keys, besides the node's own cluster key, an owner
// may sign the replication handshake with (nil: not set, only the node's
// current cluster key is trusted).
type ownerTrust = atomic.Pointer[func() []ed25519.PublicKey]

// TrustOwnersSignedBy makes the node's followers (those started from now
// on, and every reconnection) accept only an owner whose wire session
// handshake is signed by one of the keys keys returns, asked at each
// connection. The node runtime passes its replication verifier's trusted
// cluster keys (adminapi.New does), so a credential rotation's trust
// applies as it changes. Without it followers trust only the node's
// current cluster key (RequireSignedOwner), which breaks replication in
// the middle of a rotation (peers that switched keys before this node).
// Either way an owner that does not sign with a trusted key, or a relay
// that ends the session with its own key, gets nothing from a follower:
// not its token, not an acknowledgement, not a resync that drops its log.
func (n *Node) TrustOwnersSignedBy(keys func() []ed25519.PublicKey) {
	n.ownerKeys.Store(&keys)
}

// trustedOwnerKeys is FollowerOptions.TrustedOwnerKeys: what the function
// TrustOwnersSignedBy set last returns (nil before it is called), read at
// every connection so a follower started earlier sees it too.
func (n *Node) trustedOwnerKeys() []ed25519.PublicKey {
	if p := n.ownerKeys.Load(); p != nil && *p != nil {
		return (*p)()
	}
	return nil
}

// replicateTokenTTL bounds a captured replication token's use.
const replicateTokenTTL = time.Minute

// syncFollowers makes the running followers match t: one per shard this
// node follows, pointed at the shard's current owner. It stops followers
// first, so a shard this node now owns has no follower appending to its
// log when the bus takes it over. Callers hold applyMu.
func (n *Node) syncFollowers(t *topology.Topology) error {
	want := map[uint16]string{}
	for _, id := range t.FollowedBy(n.name) {
		s, _ := t.Shard(id)
		if m, ok := t.Member(s.Owner); ok && m.Wire != "" {
			want[id] = m.Wire
		}
	}
	for id, f := range n.followers {
		if addr, ok := want[id]; !ok || addr != f.owner {
			_ = f.f.Close()
			delete(n.followers, id)
		}
	}
	if n.clusterKey == nil {
		if len(want) > 0 {
			n.logger.Warn("no cluster key: not replicating the shards this node follows", "shards", len(want))
		}
		return nil
	}
	for id, addr := range want {
		if f, ok := n.followers[id]; ok {
			select {
			case <-f.f.Done():
				// A follower that stopped on a terminal error (diverged,
				// an entry too large, a local log failure) stays stopped:
				// restarting it would fail the same way. It is reported
				// in status. A lagged follower does not stop: it resyncs
				// from the owner's log head (Resync below).
			default:
			}
			continue
		}
		l, err := n.logs.Log(id)
		if err != nil {
			return fmt.Errorf("follow shard %d: %w", id, err)
		}
		shard := id
		f, err := replication.StartFollower(replication.FollowerOptions{
			Name:  n.name,
			Shard: id,
			Addr:  addr,
			Log:   l,
			Epoch: n.epoch,
			Token: func() ([]byte, error) {
				key := n.ClusterKey() // a rotation may have replaced it
				tok, err := key.TryIssue(identity.Grant{
					Subject: key.PublicKey(), Scope: identity.ScopeReplicate,
					Shard: shard, ShardBound: true, TTL: replicateTokenTTL,
				}, n.now())
				if err != nil {
					return nil, err
				}
				return tok.Encode(), nil
			},
			// A diverged log (an old owner's writes the new owner never
			// got, after a failover under ackPolicy Leader, or a copy
			// that diverged while this node did not follow the shard)
			// is not cut back entry by entry: with Resync below, the
			// owner answers it with a resync (replication/divergence.go),
			// which replaces the log and the daemon copies with the
			// owner's. That is safe because only an authoritative owner
			// serves: a memory-mode node that restarted empty serves
			// nothing until the operator pushes it a topology, and the
			// operator's lease keeper withholds ownership from it
			// (controllers/leases.go). An owner from before divergence
			// repair refuses instead, and the follower stops with the
			// divergence in status, as it used to.
			TruncateDiverged: false,
			// The owner pruned past this follower (it was down, or too
			// slow): start over from the owner's log head with the
			// owner's daemon snapshots rather than stop.
			Resync:      n.resyncDaemons,
			StageResync: n.stageResync,
			// A follower never takes entries (or a resync that drops
			// its log) from an owner it cannot authenticate: the owner
			// must sign the handshake with this node's cluster key (the
			// issuer of its token) or, during a rotation, another key
			// the replication verifier trusts, read live.
			RequireSignedOwner: true,
			TrustedOwnerKeys:   n.trustedOwnerKeys,
			SyncBeforeAck:      n.syncBeforeAck,
			Logger:             n.logger,
		})
		if err != nil {
			return fmt.Errorf("follow shard %d: %w", id, err)
		}
		n.followers[id] = &follower{owner: addr, f: f}
	}
	return nil
}

// epoch is the current topology epoch (0 before the first push).
func (n *Node) epoch() uint64 {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.topo == nil {
		return 0
	}
	return n.topo.Epoch
}

// Epoch implements replication.LogSource.
func (n *Node) Epoch() uint64 { return n.epoch() }

// FollowerStatuses reports every running follower.
func (n *Node) FollowerStatuses() []replication.FollowerStatus {
	n.applyMu.Lock()
	defer n.applyMu.Unlock()
	out := make([]replication.FollowerStatus, 0, len(n.followers))
	for _, f := range n.followers {
		out = append(out, f.f.Status())
	}
	return out
}

func (n *Node) closeFollowers() {
	n.applyMu.Lock()
	defer n.applyMu.Unlock()
	for id, f := range n.followers {
		_ = f.f.Close()
		delete(n.followers, id)
	}
}

// ownerSource is the replication server's view of the node: it serves
// only the shards this node owns in the current topology, so no follower
// replicates from a node that is not the owner.
type ownerSource struct{ n *Node }

// OwnerSource returns the LogSource the node's replication server uses.
func (n *Node) OwnerSource() replication.LogSource { return ownerSource{n} }

func (s ownerSource) Epoch() uint64 { return s.n.epoch() }

func (s ownerSource) Log(id uint16) (*redex.Log, error) {
	t := s.n.Topology()
	if t == nil {
		return nil, ErrNoTopology
	}
	if sh, ok := t.Shard(id); !ok || sh.Owner != s.n.name {
		return nil, fmt.Errorf("shard %d: not owned by %s at epoch %d", id, s.n.name, t.Epoch)
	}
	return s.n.logs.Log(id)
}

// DaemonSnapshots implements replication.DaemonSnapshotter: a lagged
// follower resyncs with the owner's daemon state as well as its log head.
func (s ownerSource) DaemonSnapshots(id uint16) ([][]byte, error) {
	return s.n.daemonSnapshots(id)
}
