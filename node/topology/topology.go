// Package topology is the contract between the operator and the nodes: who
// is in the cluster, which active node owns each shard, who follows it, at
// which epoch, and how long an owner may accept writes without hearing from
// the operator again (the lease).
//
// Invariants (pinned by tests):
//
//   - A valid topology names each member once, gives every shard exactly one
//     owner that is an active member, and never lists the owner among the
//     shard's followers.
//   - Epochs only move forward: a node accepts a topology whose epoch is
//     equal to (a lease renewal) or above the one it holds, and refuses an
//     older one (ErrStaleEpoch).
//   - Keyed events map to base shard (xxhash64(key)*count)>>64, which is
//     unbiased for any count (Lemire's multiply-shift), and identical on every
//     node and client.
//   - Shards 0..BaseShards-1 are the base shards and always present. Shards
//     with higher ids were added by autoscaling for keyless traffic: they
//     are owned, followed, moved and read exactly like base shards, but no
//     key ever hashes onto them. An added shard may be Draining: it takes
//     no new keyless events (nodes and clients route around it) and stays
//     readable until the operator removes it from the topology. A base
//     shard is never draining. Shard ids are never reused.
//
// Compatibility: Draining is omitted from the JSON when false, so a
// topology without draining shards is byte-for-byte what nodes that
// predate autoscaling accept; such a node refuses a topology that carries
// the field (its decoder rejects unknown fields), which is safe (it keeps
// the previous epoch) and says why.
//
// The package imports neither Kubernetes nor the engine's bus, so the
// operator, the node and the client SDK share it.
package topology

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Role is a member's role.
type Role string

const (
	// Active members own shards.
	Active Role = "active"
	// Standby members follow shards and own none.
	Standby Role = "standby"
)

// Member is one node of the cluster.
type Member struct {
	// Name is the pod name.
	Name string `json:"name"`
	// Admin is the admin API address (host:port).
	Admin string `json:"admin"`
	// Data is the data API address (host:port).
	Data string `json:"data"`
	// Wire is the binary data and replication address (host:port).
	Wire string `json:"wire,omitempty"`
	// Role is active or standby.
	Role Role `json:"role"`
}

// Shard is one shard's placement.
type Shard struct {
	ID uint16 `json:"id"`
	// Owner is the active member that accepts writes.
	Owner string `json:"owner"`
	// Followers replicate the owner's log.
	Followers []string `json:"followers,omitempty"`
	// Fenced stops the owner from accepting writes (they are refused as
	// "moving") while a handoff lets the new owner catch up to the last
	// event; the next epoch names the new owner.
	Fenced bool `json:"fenced,omitempty"`
	// Draining marks an added shard that autoscaling is retiring: no new
	// keyless event is routed to it, it stays readable (owned, polled,
	// replicated) until the operator removes it once retention emptied it.
	Draining bool `json:"draining,omitempty"`
}

// Topology is the operator's record, pushed to every node.
type Topology struct {
	Cluster string `json:"cluster"`
	// Epoch increases on every ownership change.
	Epoch uint64 `json:"epoch"`
	// LeaseMillis is how long an owner may accept writes after receiving
	// this topology (or a renewal at the same epoch).
	LeaseMillis int64 `json:"leaseMillis"`
	// BaseShards is the cluster's base shard count; keyed events hash
	// onto shards 0..BaseShards-1.
	BaseShards int      `json:"baseShards"`
	Members    []Member `json:"members"`
	Shards     []Shard  `json:"shards"`
}

// ErrStaleEpoch is returned when a topology older than the one held is
// offered.
var ErrStaleEpoch = errors.New("topology: epoch is older than the current one")

// Lease is the lease duration.
func (t *Topology) Lease() time.Duration { return time.Duration(t.LeaseMillis) * time.Millisecond }

// Validate checks the invariants of a topology.
func (t *Topology) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if t.Epoch == 0 {
		bad("epoch must be at least 1")
	}
	if t.LeaseMillis <= 0 {
		bad("leaseMillis must be positive")
	}
	if t.BaseShards < 1 || t.BaseShards > 1<<16 {
		bad("baseShards must be between 1 and 65536, got %d", t.BaseShards)
	}
	roles := map[string]Role{}
	for _, m := range t.Members {
		switch {
		case m.Name == "":
			bad("a member has no name")
		case roles[m.Name] != "":
			bad("member %q is listed twice", m.Name)
		case m.Role != Active && m.Role != Standby:
			bad("member %q has role %q, want active or standby", m.Name, m.Role)
		}
		roles[m.Name] = m.Role
	}
	seen := map[uint16]bool{}
	for _, s := range t.Shards {
		if seen[s.ID] {
			bad("shard %d is listed twice", s.ID)
		}
		seen[s.ID] = true
		if s.Draining && int(s.ID) < t.BaseShards {
			bad("shard %d: base shards cannot drain", s.ID)
		}
		switch roles[s.Owner] {
		case Active:
		case "":
			bad("shard %d: owner %q is not a member", s.ID, s.Owner)
		default:
			bad("shard %d: owner %q is not active", s.ID, s.Owner)
		}
		for _, f := range s.Followers {
			if f == s.Owner {
				bad("shard %d: owner %q is also a follower", s.ID, f)
			} else if roles[f] == "" {
				bad("shard %d: follower %q is not a member", s.ID, f)
			}
		}
	}
	for id := range t.BaseShards {
		if id < 1<<16 && !seen[uint16(id)] {
			bad("base shard %d has no owner", id)
			break
		}
	}
	return errors.Join(errs...)
}

// CheckNewer returns ErrStaleEpoch when next is older than t. A nil t
// accepts anything.
func (t *Topology) CheckNewer(next *Topology) error {
	if t != nil && next.Epoch < t.Epoch {
		return fmt.Errorf("%w: offered %d, holding %d", ErrStaleEpoch, next.Epoch, t.Epoch)
	}
	return nil
}

// Member returns the member named name.
func (t *Topology) Member(name string) (Member, bool) {
	i := slices.IndexFunc(t.Members, func(m Member) bool { return m.Name == name })
	if i < 0 {
		return Member{}, false
	}
	return t.Members[i], true
}

// Shard returns the placement of shard id.
func (t *Topology) Shard(id uint16) (Shard, bool) {
	i := slices.IndexFunc(t.Shards, func(s Shard) bool { return s.ID == id })
	if i < 0 {
		return Shard{}, false
	}
	return t.Shards[i], true
}

// OwnedBy lists the shards name owns, ascending.
func (t *Topology) OwnedBy(name string) []uint16 {
	var out []uint16
	for _, s := range t.Shards {
		if s.Owner == name {
			out = append(out, s.ID)
		}
	}
	slices.Sort(out)
	return out
}

// FollowedBy lists the shards name follows, ascending.
func (t *Topology) FollowedBy(name string) []uint16 {
	var out []uint16
	for _, s := range t.Shards {
		if slices.Contains(s.Followers, name) {
			out = append(out, s.ID)
		}
	}
	slices.Sort(out)
	return out
}

// Routable lists the shards that take new keyless events: every shard
// that is not draining, ascending.
func (t *Topology) Routable() []uint16 {
	var out []uint16
	for _, s := range t.Shards {
		if !s.Draining {
			out = append(out, s.ID)
		}
	}
	slices.Sort(out)
	return out
}

// Added lists the shards above the base range (added by autoscaling),
// ascending.
func (t *Topology) Added() []uint16 {
	var out []uint16
	for _, s := range t.Shards {
		if int(s.ID) >= t.BaseShards {
			out = append(out, s.ID)
		}
	}
	slices.Sort(out)
	return out
}

// KeyShard is the base shard a keyed event belongs to.
func KeyShard(key []byte, baseShards int) uint16 {
	hi, _ := bits.Mul64(xxhash.Sum64(key), uint64(baseShards))
	return uint16(hi)
}
