package snapshot

import (
	"errors"
	"fmt"
	"sync"
)

// ErrStale matches every *StaleError via errors.Is.
var ErrStale = errors.New("snapshot: stale snapshot")

// StaleError rejects a snapshot that does not advance its entity.
type StaleError struct {
	Entity    string
	Through   uint64 // the rejected snapshot's seq
	HighWater uint64 // the entity's high-water mark
}

func (e *StaleError) Error() string {
	return fmt.Sprintf("snapshot: %q through seq %d is not above high-water mark %d", e.Entity, e.Through, e.HighWater)
}

// Is makes errors.Is(err, ErrStale) true.
func (e *StaleError) Is(target error) bool { return target == ErrStale }

// Snapshot is an entity's encoded state as of a seq.
type Snapshot struct {
	Entity string
	// Through is the last seq folded into State.
	Through uint64
	State   []byte
}

// Store holds the newest snapshot per entity. It is safe for concurrent
// use; concurrent Puts for one entity are linearised by the store's lock,
// so of two Puts with the same Through exactly one succeeds.
type Store struct {
	mu    sync.Mutex
	snaps map[string]Snapshot
	high  map[string]uint64 // survives Remove
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{snaps: make(map[string]Snapshot), high: make(map[string]uint64)}
}

// Put stages s as its entity's newest snapshot. It returns a *StaleError if
// s.Through is not above the entity's high-water mark. The store keeps s's
// State slice; callers must not modify it afterwards.
func (st *Store) Put(s Snapshot) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if hw, ok := st.high[s.Entity]; ok && s.Through <= hw {
		return &StaleError{Entity: s.Entity, Through: s.Through, HighWater: hw}
	}
	st.high[s.Entity] = s.Through
	st.snaps[s.Entity] = s
	return nil
}

// Get returns the entity's newest snapshot.
func (st *Store) Get(entity string) (Snapshot, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.snaps[entity]
	return s, ok
}

// HighWater returns the highest Through ever accepted for the entity, even
// if its snapshot was removed since.
func (st *Store) HighWater(entity string) (uint64, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	hw, ok := st.high[entity]
	return hw, ok
}

// Remove drops the entity's snapshot. The high-water mark stays, so an
// older snapshot cannot be staged afterwards.
func (st *Store) Remove(entity string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.snaps, entity)
}

// Len returns the number of stored snapshots.
func (st *Store) Len() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.snaps)
}

// Entities returns the entities that have a snapshot, in no fixed order.
func (st *Store) Entities() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]string, 0, len(st.snaps))
	for e := range st.snaps {
		out = append(out, e)
	}
	return out
}

// forget drops the snapshot and the high-water mark. It is unexported on
// purpose: it defeats the anti-rewind invariant.
func (st *Store) forget(entity string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.snaps, entity)
	delete(st.high, entity)
}
