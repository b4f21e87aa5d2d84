package ring

import (
	"math/bits"
	"sync/atomic"
)

// cacheLine pads the head and tail counters apart: producers write tail,
// consumers write head, and sharing a line would make every push bounce
// the consumer's cache.
const cacheLine = 64

type slot[T any] struct {
	// seq is pos when the slot is free for the push at pos, pos+1 when it
	// holds the value pushed at pos.
	seq atomic.Uint64
	val T
}

// Ring is a bounded MPMC FIFO. Create it with New.
type Ring[T any] struct {
	_     [cacheLine]byte
	tail  atomic.Uint64 // next push position
	_     [cacheLine - 8]byte
	head  atomic.Uint64 // next pop position
	_     [cacheLine - 8]byte
	mask  uint64
	slots []slot[T]
}

// New returns a ring holding at least capacity values (rounded up to a
// power of two, minimum 2).
func New[T any](capacity int) *Ring[T] {
	if capacity < 2 {
		capacity = 2
	}
	n := uint64(1) << bits.Len64(uint64(capacity-1))
	r := &Ring[T]{mask: n - 1, slots: make([]slot[T], n)}
	for i := range r.slots {
		r.slots[i].seq.Store(uint64(i))
	}
	return r
}

// Cap is the number of values the ring holds when full.
func (r *Ring[T]) Cap() int { return len(r.slots) }

// Len is the number of values in the ring at some instant during the call.
func (r *Ring[T]) Len() int {
	for {
		h := r.head.Load()
		t := r.tail.Load()
		if r.head.Load() != h {
			continue
		}
		if t < h { // tail read before a concurrent pop advanced head
			return 0
		}
		n := t - h
		if n > uint64(len(r.slots)) {
			n = uint64(len(r.slots))
		}
		return int(n)
	}
}

// TryPush appends v, reporting false if the ring is full.
func (r *Ring[T]) TryPush(v T) bool {
	_, ok := r.TryPushPos(v)
	return ok
}

// TryPushPos appends v like TryPush and also returns the position it was
// pushed at. Positions start at 0 and are handed out in FIFO order, so a
// single consumer pops values in position order.
func (r *Ring[T]) TryPushPos(v T) (uint64, bool) {
	pos := r.tail.Load()
	for {
		s := &r.slots[pos&r.mask]
		seq := s.seq.Load()
		switch {
		case seq == pos:
			if r.tail.CompareAndSwap(pos, pos+1) {
				s.val = v
				s.seq.Store(pos + 1)
				return pos, true
			}
			pos = r.tail.Load()
		case seq < pos:
			return 0, false // slot still holds the value from one lap ago
		default:
			pos = r.tail.Load()
		}
	}
}

// TryPop removes the oldest value, reporting false if the ring is empty.
func (r *Ring[T]) TryPop() (T, bool) {
	var zero T
	pos := r.head.Load()
	for {
		s := &r.slots[pos&r.mask]
		seq := s.seq.Load()
		switch {
		case seq == pos+1:
			if r.head.CompareAndSwap(pos, pos+1) {
				v := s.val
				s.val = zero
				s.seq.Store(pos + uint64(len(r.slots)))
				return v, true
			}
			pos = r.head.Load()
		case seq < pos+1:
			return zero, false
		default:
			pos = r.head.Load()
		}
	}
}

// PushBatch appends a prefix of vs as one contiguous run and returns how
// many it appended (0 when the ring is full).
func (r *Ring[T]) PushBatch(vs []T) int {
	if len(vs) == 0 {
		return 0
	}
	for {
		pos := r.tail.Load()
		// Count the free slots from pos on. Pushes claim slots in order, so
		// the first non-free slot ends the run.
		n := 0
		for n < len(vs) && n < len(r.slots) {
			seq := r.slots[(pos+uint64(n))&r.mask].seq.Load()
			if seq != pos+uint64(n) {
				break
			}
			n++
		}
		if n == 0 {
			if r.slots[pos&r.mask].seq.Load() < pos {
				return 0
			}
			continue // raced with another pusher; retry at the new tail
		}
		if !r.tail.CompareAndSwap(pos, pos+uint64(n)) {
			continue
		}
		for i := 0; i < n; i++ {
			s := &r.slots[(pos+uint64(i))&r.mask]
			s.val = vs[i]
			s.seq.Store(pos + uint64(i) + 1)
		}
		return n
	}
}

// PopBatch moves up to len(dst) of the oldest values into dst and returns
// how many it moved (0 when the ring is empty).
func (r *Ring[T]) PopBatch(dst []T) int {
	if len(dst) == 0 {
		return 0
	}
	var zero T
	for {
		pos := r.head.Load()
		n := 0
		for n < len(dst) && n < len(r.slots) {
			seq := r.slots[(pos+uint64(n))&r.mask].seq.Load()
			if seq != pos+uint64(n)+1 {
				break
			}
			n++
		}
		if n == 0 {
			if r.slots[pos&r.mask].seq.Load() < pos+1 {
				return 0
			}
			continue
		}
		if !r.head.CompareAndSwap(pos, pos+uint64(n)) {
			continue
		}
		for i := 0; i < n; i++ {
			p := pos + uint64(i)
			s := &r.slots[p&r.mask]
			dst[i] = s.val
			s.val = zero
			s.seq.Store(p + uint64(len(r.slots)))
		}
		return n
	}
}

// PushBatchFunc is PushBatch for values produced on demand: it claims up to
// n contiguous slots and fills slot i with f(i), returning how many it
// claimed. f must not touch the ring.
func (r *Ring[T]) PushBatchFunc(n int, f func(i int) T) int {
	if n <= 0 {
		return 0
	}
	for {
		pos := r.tail.Load()
		k := 0
		for k < n && k < len(r.slots) {
			if r.slots[(pos+uint64(k))&r.mask].seq.Load() != pos+uint64(k) {
				break
			}
			k++
		}
		if k == 0 {
			if r.slots[pos&r.mask].seq.Load() < pos {
				return 0
			}
			continue
		}
		if !r.tail.CompareAndSwap(pos, pos+uint64(k)) {
			continue
		}
		for i := 0; i < k; i++ {
			s := &r.slots[(pos+uint64(i))&r.mask]
			s.val = f(i)
			s.seq.Store(pos + uint64(i) + 1)
		}
		return k
	}
}
