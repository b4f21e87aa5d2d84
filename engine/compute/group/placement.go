package group

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
)

// Node is a place a member can run, with its failure domain (zone, rack or
// host: members of a group are spread over distinct domains first).
type Node struct {
	ID     string
	Domain string
}

// Identity is a member's deterministic identity.
type Identity [32]byte

// DeriveIdentity derives member index's identity from the group seed.
func DeriveIdentity(seed [32]byte, index int) Identity {
	h := sha256.New()
	h.Write([]byte("mesh-operator/compute/group member\x00"))
	h.Write(seed[:])
	h.Write(binary.LittleEndian.AppendUint64(nil, uint64(index)))
	var id Identity
	h.Sum(id[:0])
	return id
}

// String is the identity's first 8 bytes in hex.
func (id Identity) String() string { return hex.EncodeToString(id[:8]) }

// Hash is the identity folded to 64 bits, for routing.
func (id Identity) Hash() uint64 { return binary.LittleEndian.Uint64(id[:8]) }

var (
	// ErrInvalidConfig is returned for a group config that cannot work.
	ErrInvalidConfig = errors.New("group: invalid config")
	// ErrNoHealthyNode is returned when no healthy node can take a member.
	ErrNoHealthyNode = errors.New("group: no healthy node to place a member on")
	// ErrNoHealthyMember is returned when no member can serve or promote.
	ErrNoHealthyMember = errors.New("group: no healthy member")
	// ErrUnknownNode is returned for a node id the group does not know.
	ErrUnknownNode = errors.New("group: unknown node")
)

// nodeSet tracks the nodes a group may use and their health.
type nodeSet struct {
	nodes   []Node
	healthy map[string]bool
}

func newNodeSet(nodes []Node) (*nodeSet, error) {
	s := &nodeSet{healthy: make(map[string]bool)}
	for _, n := range nodes {
		if n.ID == "" {
			return nil, fmt.Errorf("%w: node with empty id", ErrInvalidConfig)
		}
		if _, dup := s.healthy[n.ID]; dup {
			return nil, fmt.Errorf("%w: duplicate node %q", ErrInvalidConfig, n.ID)
		}
		s.nodes = append(s.nodes, n)
		s.healthy[n.ID] = true
	}
	sort.Slice(s.nodes, func(i, j int) bool { return s.nodes[i].ID < s.nodes[j].ID })
	return s, nil
}

func (s *nodeSet) set(id string, healthy bool) error {
	if _, ok := s.healthy[id]; !ok {
		return fmt.Errorf("%w: %q", ErrUnknownNode, id)
	}
	s.healthy[id] = healthy
	return nil
}

func (s *nodeSet) domain(id string) string {
	for _, n := range s.nodes {
		if n.ID == id {
			return n.Domain
		}
	}
	return ""
}

// place picks a healthy node for a new member, given the nodes the
// group's other members occupy: fewest members in the node's domain, then
// on the node, then the smallest id.
func (s *nodeSet) place(occupied []string) (string, error) {
	return s.pick(occupied, false)
}

// placeExclusive is place restricted to nodes holding no member: a member
// re-placed after a failure only moves where it adds protection.
func (s *nodeSet) placeExclusive(occupied []string) (string, error) {
	return s.pick(occupied, true)
}

func (s *nodeSet) pick(occupied []string, exclusive bool) (string, error) {
	perNode := map[string]int{}
	perDomain := map[string]int{}
	for _, id := range occupied {
		perNode[id]++
		perDomain[s.domain(id)]++
	}
	best := ""
	for _, n := range s.nodes {
		if !s.healthy[n.ID] || (exclusive && perNode[n.ID] > 0) {
			continue
		}
		if best == "" {
			best = n.ID
			continue
		}
		bd, nd := perDomain[s.domain(best)], perDomain[n.Domain]
		if nd < bd || (nd == bd && perNode[n.ID] < perNode[best]) {
			best = n.ID
		}
	}
	if best == "" {
		return "", ErrNoHealthyNode
	}
	return best, nil
}

// mix64 is the splitmix64 finalizer: a fixed, well-spread 64-bit hash.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// hashKey is FNV-1a over the key, finished with mix64. Fixed across
// processes, so every node routes a key the same way.
func hashKey(key []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, b := range key {
		h ^= uint64(b)
		h *= 1099511628211
	}
	return mix64(h)
}
