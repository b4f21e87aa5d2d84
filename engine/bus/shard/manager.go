package shard

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/purplerain/mesh-operator/engine/adapter"
	"github.com/purplerain/mesh-operator/engine/bus/ring"
)

// State is a shard's lifecycle state.
type State uint32

const (
	Provisioning State = iota
	Active
	Draining
	Stopped
)

func (s State) String() string {
	switch s {
	case Provisioning:
		return "Provisioning"
	case Active:
		return "Active"
	case Draining:
		return "Draining"
	case Stopped:
		return "Stopped"
	}
	return fmt.Sprintf("State(%d)", uint32(s))
}

var (
	// ErrExists is returned by Add for an id already present.
	ErrExists = errors.New("shard already exists")
	// ErrNotFound is returned for an id the manager does not hold.
	ErrNotFound = errors.New("shard not found")
	// ErrBudget is returned by Add when MaxShards shards already exist.
	ErrBudget = errors.New("shard budget exhausted")
	// ErrState is returned for a transition the shard's state forbids.
	ErrState = errors.New("invalid shard state transition")
)

// Shard is one shard's ring and counters. Producers touch it through the
// routing table without taking the manager's lock.
type Shard struct {
	ID   uint16
	Ring *ring.Ring[adapter.Event]

	state atomic.Uint32
	// wake is the drain worker's doorbell: producers ring it only while
	// sleeping is set, so a busy worker costs producers one atomic load.
	wake     chan struct{}
	sleeping atomic.Bool

	// Counters written by producers live on their own cache line, away
	// from the read-mostly fields above.
	_ [64]byte
	// Ingested counts events accepted into the ring.
	Ingested atomic.Uint64
	// Evicted counts accepted events later pushed out by DropOldest.
	Evicted atomic.Uint64
	// Rejected counts events refused by DropNewest or Sample (never
	// accepted).
	Rejected atomic.Uint64
	// Pressure counts ingests that found the ring full; Sample mode admits
	// every n-th of them.
	Pressure atomic.Uint64
	// InFlight counts producers between choosing this shard and finishing
	// their push. Removal and shutdown wait for two consecutive zero reads
	// after the shard (or bus) stopped admitting, so no push lands in a
	// ring nobody will read. 64-bit so no producer count can wrap it.
	InFlight atomic.Uint64
	_        [64 - 40]byte
}

// Push appends ev to the ring and wakes the drain worker if it sleeps.
func (s *Shard) Push(ev adapter.Event) bool {
	if !s.Ring.TryPush(ev) {
		return false
	}
	s.Ingested.Add(1)
	s.Notify()
	return true
}

// PushTicket pushes ev like Push and returns its ticket: one more than its
// ring position, so the n-th event ever accepted by this shard has ticket n.
func (s *Shard) PushTicket(ev adapter.Event) (uint64, bool) {
	pos, ok := s.Ring.TryPushPos(ev)
	if !ok {
		return 0, false
	}
	s.Ingested.Add(1)
	s.Notify()
	return pos + 1, true
}

// Notify wakes the drain worker if it is parked.
func (s *Shard) Notify() {
	if s.sleeping.Load() {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// Park is called by the drain worker before it waits on Wake: it marks the
// worker asleep and reports whether the ring is still empty (if not, the
// worker must not sleep; Unpark and drain again).
func (s *Shard) Park() (empty bool) {
	s.sleeping.Store(true)
	return s.Ring.Len() == 0
}

// Unpark clears the sleeping mark.
func (s *Shard) Unpark() { s.sleeping.Store(false) }

// Wake is the drain worker's doorbell.
func (s *Shard) Wake() <-chan struct{} { return s.wake }

// State returns the shard's current state.
func (s *Shard) State() State { return State(s.state.Load()) }

// Load is the number of events waiting in the shard's ring.
func (s *Shard) Load() int { return s.Ring.Len() }

// table is an immutable routing snapshot, replaced on every change.
type table struct {
	active     []*Shard // Active shards, by id
	candidates []*Shard // least loaded of active at the last refresh
}

// Manager holds the shards. All methods are safe for concurrent use.
type Manager struct {
	ringCap   int
	maxShards int

	mu     sync.RWMutex
	shards map[uint16]*Shard
	active int

	routes atomic.Pointer[table]
}

// NewManager returns an empty manager whose shards get rings of ringCap
// events; maxShards bounds how many shards may exist at once (0 = 65 536).
func NewManager(ringCap, maxShards int) *Manager {
	if maxShards <= 0 || maxShards > 1<<16 {
		maxShards = 1 << 16
	}
	m := &Manager{ringCap: ringCap, maxShards: maxShards, shards: make(map[uint16]*Shard)}
	m.routes.Store(&table{})
	return m
}

// Add creates shard id in Provisioning.
func (m *Manager) Add(id uint16) (*Shard, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.shards[id]; ok {
		return nil, fmt.Errorf("add shard %d: %w", id, ErrExists)
	}
	// Budget gate: the load of len(shards) and the insert below happen
	// under the same write lock, so two Adds cannot both pass it.
	if len(m.shards) >= m.maxShards {
		return nil, fmt.Errorf("add shard %d: %d of %d: %w", id, len(m.shards), m.maxShards, ErrBudget)
	}
	s := &Shard{ID: id, Ring: ring.New[adapter.Event](m.ringCap), wake: make(chan struct{}, 1)}
	m.shards[id] = s
	return s, nil
}

// Activate moves shard id from Provisioning to Active. It reports whether
// this call made the transition; a repeated call on an Active shard is a
// no-op that returns false and leaves the active count alone.
func (m *Manager) Activate(id uint16) (transitioned bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.shards[id]
	if !ok {
		return false, fmt.Errorf("activate shard %d: %w", id, ErrNotFound)
	}
	switch s.State() {
	case Active:
		return false, nil
	case Provisioning:
		s.state.Store(uint32(Active))
		m.active++
		m.publishLocked()
		return true, nil
	default:
		return false, fmt.Errorf("activate shard %d in %s: %w", id, s.State(), ErrState)
	}
}

// Rollback undoes a failed activation of shard id: it takes the shard out
// of routing, decrements the active count only if the shard is Active (it
// transitioned), deletes it, and returns the events left in its ring.
func (m *Manager) Rollback(id uint16) ([]adapter.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.shards[id]
	if !ok {
		return nil, fmt.Errorf("rollback shard %d: %w", id, ErrNotFound)
	}
	switch s.State() {
	case Active:
		m.active--
	case Provisioning:
		// Never activated: nothing to decrement.
	default:
		return nil, fmt.Errorf("rollback shard %d in %s: %w", id, s.State(), ErrState)
	}
	s.state.Store(uint32(Stopped))
	delete(m.shards, id)
	m.publishLocked()
	return drainRing(s), nil
}

// Drain moves shard id from Active to Draining and stops routing to it.
// Draining an already Draining shard is a no-op.
func (m *Manager) Drain(id uint16) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.shards[id]
	if !ok {
		return fmt.Errorf("drain shard %d: %w", id, ErrNotFound)
	}
	switch s.State() {
	case Draining:
		return nil
	case Active:
		s.state.Store(uint32(Draining))
		m.active--
		m.publishLocked()
		return nil
	default:
		return fmt.Errorf("drain shard %d in %s: %w", id, s.State(), ErrState)
	}
}

// Stop moves shard id from Draining to Stopped.
func (m *Manager) Stop(id uint16) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.shards[id]
	if !ok {
		return fmt.Errorf("stop shard %d: %w", id, ErrNotFound)
	}
	switch s.State() {
	case Stopped:
		return nil
	case Draining, Provisioning:
		s.state.Store(uint32(Stopped))
		return nil
	default:
		return fmt.Errorf("stop shard %d in %s: %w", id, s.State(), ErrState)
	}
}

// Remove deletes the Stopped shard id, and only it, returning the events
// still in its ring.
func (m *Manager) Remove(id uint16) ([]adapter.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.shards[id]
	if !ok {
		return nil, fmt.Errorf("remove shard %d: %w", id, ErrNotFound)
	}
	if s.State() != Stopped {
		return nil, fmt.Errorf("remove shard %d in %s: %w", id, s.State(), ErrState)
	}
	delete(m.shards, id)
	return drainRing(s), nil
}

func drainRing(s *Shard) []adapter.Event {
	var out []adapter.Event
	buf := make([]adapter.Event, 256)
	for {
		n := s.Ring.PopBatch(buf)
		if n == 0 {
			return out
		}
		out = append(out, buf[:n]...)
	}
}

// ActiveCount is the number of Active shards.
func (m *Manager) ActiveCount() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.active
}

// Get returns shard id, or nil.
func (m *Manager) Get(id uint16) *Shard {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.shards[id]
}

// IDs returns the ids of every shard present (any state), ascending. This
// is the live set a consumer polls.
func (m *Manager) IDs() []uint16 {
	m.mu.RLock()
	ids := make([]uint16, 0, len(m.shards))
	for id := range m.shards {
		ids = append(ids, id)
	}
	m.mu.RUnlock()
	slices.Sort(ids)
	return ids
}

// ActiveShards returns the Active shards, by id, from the routing table.
func (m *Manager) ActiveShards() []*Shard { return m.routes.Load().active }

// All returns every shard present, by id.
func (m *Manager) All() []*Shard {
	m.mu.RLock()
	out := make([]*Shard, 0, len(m.shards))
	for _, s := range m.shards {
		out = append(out, s)
	}
	m.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Shard) int { return int(a.ID) - int(b.ID) })
	return out
}

func (m *Manager) publishLocked() {
	active := make([]*Shard, 0, m.active)
	for _, s := range m.shards {
		if s.State() == Active {
			active = append(active, s)
		}
	}
	slices.SortFunc(active, func(a, b *Shard) int { return int(a.ID) - int(b.ID) })
	m.routes.Store(&table{active: active, candidates: leastLoadedSet(active)})
}

// Refresh recomputes the least-loaded candidate set from the rings' current
// lengths. The bus calls it periodically; between refreshes Select spreads
// events evenly over the last candidate set.
func (m *Manager) Refresh() {
	m.mu.RLock()
	defer m.mu.RUnlock()
	t := m.routes.Load()
	m.routes.Store(&table{active: t.active, candidates: leastLoadedSet(t.active)})
}

func leastLoadedSet(active []*Shard) []*Shard {
	if len(active) == 0 {
		return nil
	}
	loads := make([]int, len(active))
	for i, s := range active {
		loads[i] = s.Load()
	}
	idx := MinIndices(loads)
	out := make([]*Shard, len(idx))
	for i, j := range idx {
		out[i] = active[j]
	}
	return out
}

// Select returns the shard a keyless event with hash h goes to: one of the
// least-loaded active shards (as of the last Refresh or topology change),
// chosen without bias. It returns nil when no shard is active.
func (m *Manager) Select(h uint64) *Shard {
	c := m.routes.Load().candidates
	if len(c) == 0 {
		return nil
	}
	return c[Pick(h, len(c))]
}

// SelectNow scans the active shards' current loads and returns one of the
// least loaded (used when the cached choice is full), or nil.
func (m *Manager) SelectNow(h uint64) *Shard {
	active := m.routes.Load().active
	if len(active) == 0 {
		return nil
	}
	loads := make([]int, len(active))
	for i, s := range active {
		loads[i] = s.Load()
	}
	return active[LeastLoaded(loads, h)]
}

// SelectKeyed returns the shard for a keyed event: among base shards
// 0..base-1, (h*base)>>64, if that shard is Active; nil otherwise.
func (m *Manager) SelectKeyed(h uint64, base int) *Shard {
	if base <= 0 {
		return nil
	}
	id := uint16(Pick(h, base))
	for _, s := range m.routes.Load().active {
		if s.ID == id {
			return s
		}
		if s.ID > id {
			break
		}
	}
	return nil
}

// Pick maps a 64-bit hash onto [0, n) with Lemire's multiply-shift: the
// high word of h*n. Every index gets either floor(2^64/n) or ceil(2^64/n)
// of the hash space, so no index is favoured the way h%n favours low ones.
func Pick(h uint64, n int) int {
	hi, _ := bits.Mul64(h, uint64(n))
	return int(hi)
}

// MinIndices returns the indices of the minimum values in loads, ascending.
func MinIndices(loads []int) []int {
	var out []int
	best := 0
	for i, l := range loads {
		switch {
		case len(out) == 0 || l < best:
			best = l
			out = append(out[:0], i)
		case l == best:
			out = append(out, i)
		}
	}
	return out
}

// LeastLoaded returns the index of a least-loaded entry of loads, chosen
// among ties with Pick(h, ties). loads must not be empty.
func LeastLoaded(loads []int, h uint64) int {
	idx := MinIndices(loads)
	return idx[Pick(h, len(idx))]
}
