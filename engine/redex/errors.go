package redex

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by operations on a closed Log and ends tails of
	// a closed Log.
	ErrClosed = errors.New("redex: log closed")
	// ErrLagged matches every *LaggedError via errors.Is.
	ErrLagged = errors.New("redex: subscriber lagged")
	// ErrPruned is returned by reads of sequence numbers that retention has
	// already dropped.
	ErrPruned = errors.New("redex: entries pruned by retention")
	// ErrInlineOnHeap is returned when the inline flag is requested on a heap
	// append, or an inline append is made on a HeapOnly log.
	ErrInlineOnHeap = errors.New("redex: inline flag refused on heap entry")
	// ErrCorrupt is returned by Open when a segment is damaged other than
	// by a torn write: bad bytes followed by an intact frame, or damage to
	// any segment but the last.
	ErrCorrupt = errors.New("redex: corrupt segment")
	// ErrNotFound is returned by Get for a sequence number not yet appended.
	ErrNotFound = errors.New("redex: no such entry")
)

// LaggedError reports that a subscriber cannot be given a gap-free stream:
// the entries from Seq on were pruned by retention, did not fit in the tail
// buffer during backfill, or arrived while the subscriber's buffer was full.
type LaggedError struct {
	// Seq is the first sequence number the subscriber did not receive.
	Seq uint64
	// Reason says which of the three cases happened.
	Reason string
}

func (e *LaggedError) Error() string {
	return fmt.Sprintf("redex: subscriber lagged at seq %d: %s", e.Seq, e.Reason)
}

// Is makes errors.Is(err, ErrLagged) true for every *LaggedError.
func (e *LaggedError) Is(target error) bool { return target == ErrLagged }

// PayloadTooLargeError is returned for a payload above Options.MaxPayload.
type PayloadTooLargeError struct {
	Size, Max int
}

func (e *PayloadTooLargeError) Error() string {
	return fmt.Sprintf("redex: payload of %d bytes exceeds the maximum of %d", e.Size, e.Max)
}

// ErrTimeRegression is returned by AppendReplicated for an entry stamped
// earlier than the entry before it: timestamps are monotonic in seq, which
// age retention relies on.
var ErrTimeRegression = errors.New("redex: replicated entry stamped before its predecessor")

// SeqGapError is returned by AppendReplicated when an entry's seq is not the
// log's next seq: a replica takes entries only densely and in order.
type SeqGapError struct {
	// Got is the seq offered; Want is the log's NextSeq.
	Got, Want uint64
}

func (e *SeqGapError) Error() string {
	if e.Got < e.Want {
		return fmt.Sprintf("redex: replicated seq %d already held (next is %d)", e.Got, e.Want)
	}
	return fmt.Sprintf("redex: replicated seq %d leaves a gap (next is %d)", e.Got, e.Want)
}

// ErrSeqExhausted is returned by an append that would need seq
// math.MaxUint64 (which is Live, never an entry's seq) and by Open for an
// Options.FirstSeq that leaves no seq to assign. A log that reaches it can
// still be read.
var ErrSeqExhausted = errors.New("redex: seq space exhausted")
