package redex

import (
	"context"
	"math"
)

// Tail is a subscription that receives every entry from a start seq on:
// first the retained backfill, then live appends, with no gap and no
// duplicate at the seam. A Tail ends with a terminal error: a *LaggedError
// (history pruned, backfill larger than the buffer, or the subscriber fell
// behind by a full buffer), ErrClosed (the log closed) or context.Canceled
// (the subscriber called Close).
type Tail struct {
	l    *Log
	ch   chan Entry
	from uint64 // live entries below from are not delivered
	// err is written under the log's state lock before ch is closed; the
	// close publishes it to the reader.
	err   error
	ended bool
}

// Live is the start position for Tail that means "from NextSeq on".
const Live = math.MaxUint64

// Tail subscribes from seq from (Live for live-only). Backfill and live
// registration happen under one hold of the state lock.
func (l *Log) Tail(from uint64) (*Tail, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	t := &Tail{l: l, ch: make(chan Entry, l.opts.TailBuffer)}
	if from == Live {
		from = l.st.next
	}
	t.from = from
	switch {
	case from < l.st.first:
		t.endLocked(&LaggedError{Seq: from, Reason: "start seq pruned by retention"})
		return t, nil
	case from < l.st.next && l.st.next-from > uint64(l.opts.TailBuffer):
		t.endLocked(&LaggedError{Seq: from, Reason: "backfill exceeds tail buffer"})
		return t, nil
	}
	for seq := from; seq < l.st.next; seq++ {
		t.ch <- l.st.entry(seq) // fits: checked against the buffer above
	}
	l.subs = append(l.subs, t)
	l.subsAtomic.Store(int64(len(l.subs)))
	return t, nil
}

// deliverLocked hands entries [from, to) to every live subscriber. A
// subscriber whose buffer is full is disconnected with a *LaggedError at the
// first seq it could not take.
func (l *Log) deliverLocked(from, to uint64) {
	kept := l.subs[:0]
	for _, t := range l.subs {
		if t.sendLocked(&l.st, from, to) {
			kept = append(kept, t)
		}
	}
	for i := len(kept); i < len(l.subs); i++ {
		l.subs[i] = nil
	}
	l.subs = kept
	l.subsAtomic.Store(int64(len(kept)))
}

func (t *Tail) sendLocked(st *store, from, to uint64) bool {
	for seq := max(from, t.from); seq < to; seq++ {
		select {
		case t.ch <- st.entry(seq):
		default:
			t.endLocked(&LaggedError{Seq: seq, Reason: "subscriber buffer full"})
			return false
		}
	}
	return true
}

// endLocked terminates the subscription with err; the caller holds the
// log's state lock and removes t from the subscriber list.
func (t *Tail) endLocked(err error) {
	if t.ended {
		return
	}
	t.ended = true
	t.err = err
	close(t.ch)
}

// From returns the first seq this tail delivers (resolved for Live).
func (t *Tail) From() uint64 { return t.from }

// C returns the entry channel. It is closed when the tail ends; Err then
// reports why.
func (t *Tail) C() <-chan Entry { return t.ch }

// Err returns the terminal error once C is closed (nil before).
func (t *Tail) Err() error {
	t.l.mu.Lock()
	defer t.l.mu.Unlock()
	return t.err
}

// Next blocks for the next entry. After the buffered entries are drained it
// returns the terminal error, or ctx's error if ctx ends first.
func (t *Tail) Next(ctx context.Context) (Entry, error) {
	// Fast path: a buffered entry needs no two-way select.
	select {
	case e, ok := <-t.ch:
		if ok {
			return e, nil
		}
		return Entry{}, t.err // published by close(t.ch)
	default:
	}
	select {
	case e, ok := <-t.ch:
		if ok {
			return e, nil
		}
		return Entry{}, t.err // published by close(t.ch)
	case <-ctx.Done():
		return Entry{}, ctx.Err()
	}
}

// Close unsubscribes. Entries still buffered can be drained from C; Next
// then returns context.Canceled.
func (t *Tail) Close() {
	l := t.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if t.ended {
		return
	}
	t.endLocked(context.Canceled)
	for i, s := range l.subs {
		if s == t {
			last := len(l.subs) - 1
			l.subs[i] = l.subs[last]
			l.subs[last] = nil
			l.subs = l.subs[:last]
			break
		}
	}
	l.subsAtomic.Store(int64(len(l.subs)))
}
