package compute

import "math"

// Event is one entry of a shard's log as a daemon sees it.
type Event struct {
	// Seq is the entry's sequence number in its shard's log; dense from 0.
	Seq uint64
	// Key is the routing key the event was ingested with (may be empty).
	Key []byte
	// Time is the entry's timestamp in Unix nanoseconds.
	Time int64
	// Payload is the event body; daemons must not modify it.
	Payload []byte
}

// Cursor is the next sequence number a daemon expects. It starts at 0 and
// saturates at math.MaxUint64: once the event with seq MaxUint64 has been
// applied the cursor is exhausted and accepts nothing (it never wraps).
type Cursor struct {
	next      uint64
	exhausted bool
}

// CursorAt returns a cursor expecting seq next.
func CursorAt(next uint64) Cursor { return Cursor{next: next} }

// Next is the next sequence number expected. For an exhausted cursor it is
// math.MaxUint64 (saturated) and Exhausted reports true.
func (c Cursor) Next() uint64 { return c.next }

// Exhausted reports whether the event with seq math.MaxUint64 was applied.
func (c Cursor) Exhausted() bool { return c.exhausted }

// Through returns the last applied seq (the daemon's through-seq), or
// ok=false when nothing has been applied from seq 0 on.
func (c Cursor) Through() (seq uint64, ok bool) {
	switch {
	case c.exhausted:
		return math.MaxUint64, true
	case c.next == 0:
		return 0, false
	default:
		return c.next - 1, true
	}
}

// Accepts reports whether seq is exactly the next expected one.
func (c Cursor) Accepts(seq uint64) bool { return !c.exhausted && seq == c.next }

// Stale reports whether seq was already applied.
func (c Cursor) Stale(seq uint64) bool { return c.exhausted || seq < c.next }

// Advance records seq as applied. It saturates rather than overflowing.
func (c *Cursor) Advance(seq uint64) {
	if seq == math.MaxUint64 {
		c.next, c.exhausted = math.MaxUint64, true
		return
	}
	c.next = seq + 1
}
