package wire

import (
	"errors"
	"fmt"
	"math"
)

// Fragmentation: an event larger than one packet's payload travels as a
// run of consecutive packets of one stream, each holding exactly one frame
// (a chunk of the event) and marked in the header:
//
//	FragmentFlags  FragFlagFragment on every fragment, FragFlagLast on the last
//	FragmentID     the sender's id for this event (unique among its events of
//	               the stream being reassembled)
//	FragmentOffset the fragment's index: 0, 1, 2, … (not a byte offset: a
//	               16-bit byte offset could not address a large event)
//
// A Reassembler on the receiving side joins them, refusing out-of-order
// fragments and holding bounded memory: each event at most MaxEvent bytes
// (an *OversizeError otherwise, from the first fragment that crosses the
// bound, before anything past it is buffered) and all events being
// reassembled at most MaxInFlight bytes.

// Fragment flags (Header.FragmentFlags).
const (
	FragFlagFragment uint8 = 1 << 0
	FragFlagLast     uint8 = 1 << 1

	fragFlagsKnown = FragFlagFragment | FragFlagLast
)

const (
	// DefaultMaxEventSize bounds one reassembled event unless configured
	// (the RedEX default payload limit).
	DefaultMaxEventSize = 16 << 20
	// DefaultMaxReassembly bounds the bytes a Reassembler holds across
	// every partial event.
	DefaultMaxReassembly = 64 << 20
	// MaxFragments is the most fragments one event can have.
	MaxFragments = math.MaxUint16 + 1
)

// Fragmentation errors.
var (
	// ErrEventOversize: an event is larger than the receiver's (or the
	// sender's) bound. Use errors.As with *OversizeError for the sizes.
	ErrEventOversize = errors.New("wire: event exceeds the maximum event size")
	// ErrFragment: fragments out of order, a fragment of an unknown event,
	// a fragment packet that is not exactly one frame, unknown fragment
	// flags.
	ErrFragment = errors.New("wire: malformed fragment")
	// ErrReassemblyMemory: the partial events together would exceed the
	// reassembler's memory bound.
	ErrReassemblyMemory = errors.New("wire: reassembly memory bound exceeded")
)

// OversizeError says how large an event was (at least) and the bound it
// crossed. It unwraps to ErrEventOversize.
type OversizeError struct {
	// Size is the event's size, or when refused during reassembly the
	// bytes received so far including the fragment that crossed Max.
	Size int
	Max  int
}

func (e *OversizeError) Error() string {
	return fmt.Sprintf("wire: event of at least %d bytes exceeds the maximum of %d", e.Size, e.Max)
}

func (e *OversizeError) Unwrap() error { return ErrEventOversize }

// SplitEvent cuts event into chunks of at most chunk bytes, in order (the
// chunks alias event). It refuses an event larger than maxEvent or one that
// would need more than MaxFragments chunks. An empty event is one empty
// chunk.
func SplitEvent(event []byte, chunk, maxEvent int) ([][]byte, error) {
	if chunk <= 0 {
		return nil, fmt.Errorf("%w: chunk size %d", ErrFragment, chunk)
	}
	if len(event) > maxEvent {
		return nil, &OversizeError{Size: len(event), Max: maxEvent}
	}
	n := max(1, (len(event)+chunk-1)/chunk)
	if n > MaxFragments {
		return nil, &OversizeError{Size: len(event), Max: MaxFragments * chunk}
	}
	out := make([][]byte, 0, n)
	for i := 0; i < n; i++ {
		lo, hi := i*chunk, min((i+1)*chunk, len(event))
		out = append(out, event[lo:hi:hi])
	}
	return out, nil
}

// FragmentHeader marks h as fragment index of n of event id.
func FragmentHeader(h *Header, id uint16, index, n int) {
	h.FragmentFlags = FragFlagFragment
	if index == n-1 {
		h.FragmentFlags |= FragFlagLast
	}
	h.FragmentID = id
	h.FragmentOffset = uint16(index)
}

// IsFragment reports whether h is a fragment packet.
func IsFragment(h *Header) bool { return h.FragmentFlags != 0 }

// Reassembler joins fragments back into events. Events are keyed by
// (stream id, fragment id), so several streams can interleave their
// fragmented events on one connection; within a stream, fragments arrive
// in order (the transports run over TCP). It is not safe for concurrent
// use.
type Reassembler struct {
	maxEvent, maxInFlight int
	inFlight              int
	parts                 map[fragKey]*partial
}

type fragKey struct {
	stream uint64
	id     uint16
}

type partial struct {
	next int // index of the fragment expected next
	buf  []byte
}

// NewReassembler bounds each event to maxEvent bytes and all partial
// events together to maxInFlight bytes (defaults when <= 0).
func NewReassembler(maxEvent, maxInFlight int) *Reassembler {
	if maxEvent <= 0 {
		maxEvent = DefaultMaxEventSize
	}
	if maxInFlight <= 0 {
		maxInFlight = DefaultMaxReassembly
	}
	return &Reassembler{maxEvent: maxEvent, maxInFlight: maxInFlight, parts: map[fragKey]*partial{}}
}

// MaxEvent is the per-event bound.
func (r *Reassembler) MaxEvent() int { return r.maxEvent }

// InFlight is the bytes held by partial events.
func (r *Reassembler) InFlight() int { return r.inFlight }

// Pending is the number of partial events.
func (r *Reassembler) Pending() int { return len(r.parts) }

// Add takes one fragment packet's header and its single frame. It returns
// the whole event (a new buffer the caller owns) when h is the last
// fragment, nil before. Every error leaves the partial event of h dropped
// and its memory released; the caller should treat the connection as
// broken (ErrFragment, ErrReassemblyMemory) or refuse the event
// (*OversizeError).
func (r *Reassembler) Add(h *Header, chunk []byte) ([]byte, error) {
	if h.FragmentFlags&^fragFlagsKnown != 0 || h.FragmentFlags&FragFlagFragment == 0 {
		return nil, fmt.Errorf("%w: fragment flags %#x", ErrFragment, h.FragmentFlags)
	}
	k := fragKey{stream: h.StreamID, id: h.FragmentID}
	p := r.parts[k]
	idx := int(h.FragmentOffset)
	switch {
	case p == nil && idx != 0:
		return nil, fmt.Errorf("%w: fragment %d of event %d on stream %d without its start", ErrFragment, idx, h.FragmentID, h.StreamID)
	case p != nil && idx != p.next:
		r.drop(k, p)
		return nil, fmt.Errorf("%w: fragment %d of event %d on stream %d, want %d", ErrFragment, idx, h.FragmentID, h.StreamID, p.next)
	}
	if p == nil {
		p = &partial{}
	}
	have := len(p.buf) + len(chunk)
	if have > r.maxEvent {
		r.drop(k, p)
		return nil, &OversizeError{Size: have, Max: r.maxEvent}
	}
	if h.FragmentFlags&FragFlagLast != 0 && idx == 0 {
		// A single fragment: nothing to hold.
		return append([]byte{}, chunk...), nil
	}
	if r.inFlight+len(chunk) > r.maxInFlight {
		r.drop(k, p)
		return nil, fmt.Errorf("%w: %d bytes held, %d more, bound %d", ErrReassemblyMemory, r.inFlight, len(chunk), r.maxInFlight)
	}
	r.parts[k] = p
	p.buf = append(p.buf, chunk...)
	r.inFlight += len(chunk)
	p.next++
	if h.FragmentFlags&FragFlagLast == 0 {
		return nil, nil
	}
	out := p.buf
	r.drop(k, p)
	return out, nil
}

// Drop forgets the partial event of (stream, id), if any.
func (r *Reassembler) Drop(stream uint64, id uint16) {
	k := fragKey{stream: stream, id: id}
	if p := r.parts[k]; p != nil {
		r.drop(k, p)
	}
}

func (r *Reassembler) drop(k fragKey, p *partial) {
	if _, ok := r.parts[k]; ok {
		r.inFlight -= len(p.buf)
		delete(r.parts, k)
	}
}
