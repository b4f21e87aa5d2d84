package group

import (
	"errors"
	"fmt"

	"github.com/purplerain/mesh-operator/engine/compute"
)

// Role is a standby-group member's role.
type Role uint8

const (
	RoleStandby Role = iota
	RoleActive
)

func (r Role) String() string {
	if r == RoleActive {
		return "active"
	}
	return "standby"
}

// StandbyConfig configures a StandbyGroup.
type StandbyConfig struct {
	// Name is the daemon name every member runs.
	Name   string
	Kind   string
	Config []byte
	// Members is 1 active + Members-1 standbys; at least 2.
	Members int
	Seed    [32]byte
	Host    compute.HostConfig
	// SyncEvery syncs the standbys after every N events delivered, bounding
	// the replay buffer. 0 leaves syncing to the caller.
	SyncEvery int
}

// Member describes one member of a group.
type Member struct {
	Index    int
	Identity Identity
	Node     string
	Role     Role
	Healthy  bool
	// Synced is the cursor the member's state covers (for a standby: its
	// last sync or replay; for the active: its live cursor).
	Synced compute.Cursor
}

type standbyMember struct {
	index    int
	identity Identity
	node     string
	role     Role
	healthy  bool
	host     *compute.Host
}

// StandbyGroup is one active daemon and its warm standbys.
type StandbyGroup struct {
	cfg     StandbyConfig
	kinds   *compute.Kinds
	nodes   *nodeSet
	members []*standbyMember
	active  int
	// buffer holds events delivered to the active that some healthy
	// standby has not synced past, in seq order.
	buffer []compute.Event
	term   uint64
	// sinceSync counts deliveries since the last automatic sync.
	sinceSync int
	syncErr   error
}

// NewStandbyGroup places cfg.Members members over nodes (member 0 is the
// active) and starts each with a fresh daemon.
func NewStandbyGroup(cfg StandbyConfig, kinds *compute.Kinds, nodes []Node) (*StandbyGroup, error) {
	if cfg.Members < 2 {
		return nil, fmt.Errorf("%w: a standby group needs at least 2 members, got %d", ErrInvalidConfig, cfg.Members)
	}
	ns, err := newNodeSet(nodes)
	if err != nil {
		return nil, err
	}
	g := &StandbyGroup{cfg: cfg, kinds: kinds, nodes: ns, term: 1}
	for i := 0; i < cfg.Members; i++ {
		node, err := ns.place(g.occupied(-1))
		if err != nil {
			return nil, err
		}
		h, err := g.freshHost()
		if err != nil {
			return nil, err
		}
		role := RoleStandby
		if i == 0 {
			role = RoleActive
		}
		g.members = append(g.members, &standbyMember{index: i, identity: DeriveIdentity(cfg.Seed, i), node: node, role: role, healthy: true, host: h})
	}
	return g, nil
}

func (g *StandbyGroup) freshHost() (*compute.Host, error) {
	d, err := g.kinds.New(g.cfg.Kind, g.cfg.Name, g.cfg.Config)
	if err != nil {
		return nil, err
	}
	return compute.NewHost(g.cfg.Name, g.cfg.Kind, g.cfg.Config, d, compute.CursorAt(0), g.cfg.Host), nil
}

// occupied lists the nodes of healthy members other than skip.
func (g *StandbyGroup) occupied(skip int) []string {
	var out []string
	for _, m := range g.members {
		if m.index != skip && m.healthy {
			out = append(out, m.node)
		}
	}
	return out
}

// Term is bumped on every promotion (the group's epoch).
func (g *StandbyGroup) Term() uint64 { return g.term }

// Active returns the active member.
func (g *StandbyGroup) Active() Member { return g.describe(g.members[g.active]) }

// ActiveHost returns the active member's host (to read its daemon).
func (g *StandbyGroup) ActiveHost() *compute.Host { return g.members[g.active].host }

// Members describes every member.
func (g *StandbyGroup) Members() []Member {
	out := make([]Member, len(g.members))
	for i, m := range g.members {
		out[i] = g.describe(m)
	}
	return out
}

func (g *StandbyGroup) describe(m *standbyMember) Member {
	return Member{Index: m.index, Identity: m.identity, Node: m.node, Role: m.role, Healthy: m.healthy, Synced: m.host.Cursor()}
}

// Buffered is the number of events held for replay on promotion.
func (g *StandbyGroup) Buffered() int { return len(g.buffer) }

// Deliver applies ev on the active and keeps it for standby replay.
func (g *StandbyGroup) Deliver(ev compute.Event) ([][]byte, error) {
	out, err := g.members[g.active].host.Deliver(ev)
	if err != nil {
		return nil, err
	}
	g.buffer = append(g.buffer, ev)
	if g.cfg.SyncEvery > 0 {
		if g.sinceSync++; g.sinceSync >= g.cfg.SyncEvery {
			g.sinceSync = 0
			// The event is applied either way; a failed sync keeps the
			// buffer and is reported by LastSyncErr.
			_, g.syncErr = g.SyncStandbys()
		}
	}
	return out, nil
}

// LastSyncErr is the error of the last automatic sync (nil if it worked).
func (g *StandbyGroup) LastSyncErr() error { return g.syncErr }

// SyncStandbys snapshots the active and restores every healthy standby
// from it, returning the snapshot's cursor. A standby whose restore fails
// keeps its previous state and its events stay buffered; the error names
// it. The buffer drops only events every healthy standby has synced past.
func (g *StandbyGroup) SyncStandbys() (compute.Cursor, error) {
	snap, err := g.members[g.active].host.Snapshot()
	if err != nil {
		return compute.Cursor{}, fmt.Errorf("group: snapshot active: %w", err)
	}
	var errs []error
	for _, m := range g.members {
		if m.role != RoleStandby || !m.healthy {
			continue
		}
		if err := m.host.Restore(snap); err != nil {
			errs = append(errs, fmt.Errorf("group: sync standby %d on %s: %w", m.index, m.node, err))
		}
	}
	g.trim()
	return snap.Cursor, errors.Join(errs...)
}

// trim drops buffered events that every healthy standby has applied.
func (g *StandbyGroup) trim() {
	var low compute.Cursor
	first := true
	for _, m := range g.members {
		if m.role != RoleStandby || !m.healthy {
			continue
		}
		c := m.host.Cursor()
		if first || less(c, low) {
			low, first = c, false
		}
	}
	if first {
		return // no healthy standby: keep everything for the next one
	}
	i := 0
	for i < len(g.buffer) && low.Stale(g.buffer[i].Seq) {
		i++
	}
	g.buffer = append(g.buffer[:0:0], g.buffer[i:]...)
}

func less(a, b compute.Cursor) bool {
	if a.Exhausted() != b.Exhausted() {
		return b.Exhausted()
	}
	return a.Next() < b.Next()
}

// eligible reports whether the buffer covers everything m is missing.
func (g *StandbyGroup) eligible(m *standbyMember) bool {
	c := m.host.Cursor()
	switch {
	case c.Exhausted():
		return true
	case len(g.buffer) == 0:
		return !less(c, g.members[g.active].host.Cursor())
	default:
		return c.Next() >= g.buffer[0].Seq
	}
}

// Promote makes the eligible healthy standby with the highest synced seq
// the active, replaying the buffered events it is missing so its state
// equals the old active's. The old active becomes an unhealthy standby.
func (g *StandbyGroup) Promote() (Member, error) {
	var best *standbyMember
	for _, m := range g.members {
		if m.role != RoleStandby || !m.healthy || !g.eligible(m) {
			continue
		}
		if best == nil || less(best.host.Cursor(), m.host.Cursor()) {
			best = m
		}
	}
	if best == nil {
		return Member{}, fmt.Errorf("%w: no healthy standby with a replayable sync point", ErrNoHealthyMember)
	}
	for _, ev := range g.buffer {
		if best.host.Cursor().Stale(ev.Seq) {
			continue
		}
		if _, err := best.host.Deliver(ev); err != nil {
			// Roles are unchanged; the standby's cursor records how far it
			// got, and the rest stays buffered for the next attempt.
			return Member{}, fmt.Errorf("group: replay on standby %d: %w", best.index, err)
		}
	}
	old := g.members[g.active]
	old.role, old.healthy = RoleStandby, false
	best.role = RoleActive
	g.active = best.index
	g.term++
	g.trim()
	return g.describe(best), nil
}

// OnNodeFailure marks node failed. If the active was on it, a standby is
// promoted. Every lost standby (including the old active) is re-placed on a
// healthy node that holds no other member, with a fresh daemon restored
// from the active; when there is no such node it waits for OnNodeRecovery.
func (g *StandbyGroup) OnNodeFailure(node string) error {
	if err := g.nodes.set(node, false); err != nil {
		return err
	}
	lostActive := false
	for _, m := range g.members {
		if m.node == node && m.healthy {
			m.healthy = false
			if m.role == RoleActive {
				lostActive = true
			}
		}
	}
	if lostActive {
		if _, err := g.Promote(); err != nil {
			return fmt.Errorf("group: promote after losing %s: %w", node, err)
		}
	}
	for _, m := range g.members {
		if m.healthy || m.role != RoleStandby {
			continue
		}
		target, err := g.nodes.placeExclusive(g.occupied(m.index))
		if err != nil {
			continue // no room now; OnNodeRecovery brings it back
		}
		if err := g.respawn(m, target); err != nil {
			return err
		}
	}
	g.trim()
	return nil
}

// respawn gives m a fresh daemon on node, restored from the active.
func (g *StandbyGroup) respawn(m *standbyMember, node string) error {
	h, err := g.freshHost()
	if err != nil {
		return err
	}
	snap, err := g.members[g.active].host.Snapshot()
	if err != nil {
		return fmt.Errorf("group: snapshot active for standby %d: %w", m.index, err)
	}
	if err := h.Restore(snap); err != nil {
		return fmt.Errorf("group: restore standby %d: %w", m.index, err)
	}
	m.host, m.node, m.healthy = h, node, true
	return nil
}

// OnNodeRecovery marks node healthy and brings back every failed member on
// it as a standby synced from the active. It does not stop at the first
// member: several members may share a node.
func (g *StandbyGroup) OnNodeRecovery(node string) error {
	if err := g.nodes.set(node, true); err != nil {
		return err
	}
	for _, m := range g.members {
		if m.node != node || m.healthy {
			continue
		}
		if err := g.respawn(m, node); err != nil {
			return err
		}
	}
	g.trim()
	return nil
}
