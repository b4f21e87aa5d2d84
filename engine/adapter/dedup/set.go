package dedup

import (
	"sync"
)

// MaxCapacity is the largest capacity a Set accepts.
const MaxCapacity = 1 << 24

// Set is a bounded FIFO set of ids, safe for concurrent use.
type Set struct {
	mu    sync.Mutex
	cap   int
	fifo  []string // ring of ids in insertion order
	head  int      // index of the oldest id when full
	index map[string]struct{}
}

// New returns a set holding at most capacity ids, clamped to
// [1, MaxCapacity].
func New(capacity int) *Set {
	capacity = min(max(capacity, 1), MaxCapacity)
	return &Set{cap: capacity, index: make(map[string]struct{}, min(capacity, 1<<12))}
}

// Cap returns the (clamped) capacity.
func (s *Set) Cap() int { return s.cap }

// Len returns the number of ids held.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.fifo)
}

// Contains reports whether id is held, without inserting it.
func (s *Set) Contains(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.index[id]
	return ok
}

// Seen reports whether id was already held; if not, it inserts it,
// evicting the oldest inserted id when full.
func (s *Set) Seen(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.index[id]; ok {
		return true
	}
	s.insertLocked(id)
	return false
}

func (s *Set) insertLocked(id string) {
	if len(s.fifo) < s.cap {
		s.fifo = append(s.fifo, id)
	} else {
		delete(s.index, s.fifo[s.head])
		s.fifo[s.head] = id
		s.head = (s.head + 1) % s.cap
	}
	s.index[id] = struct{}{}
}

// ids returns the held ids oldest first.
func (s *Set) idsLocked() []string {
	out := make([]string, 0, len(s.fifo))
	out = append(out, s.fifo[s.head:]...)
	return append(out, s.fifo[:s.head]...)
}
