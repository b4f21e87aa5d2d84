package bus

import (
	"context"
	"errors"
	"fmt"
	randv2 "math/rand/v2"

	"github.com/purplerain/mesh-operator/engine/adapter"
	"github.com/purplerain/mesh-operator/engine/bus/shard"
)

// Acknowledged ingest: IngestTo puts an event into a chosen shard and hands
// back a Ticket; WaitDispatched blocks until the adapter stored that event
// (or the bus gave up on it). Many concurrent ingests share the batches the
// worker dispatches, so waiting costs one batch latency, not one adapter
// call per event (group commit).
//
// Tickets rely on the shard's batch worker seeing events in ring-position
// order, which holds unless a producer evicts events from the ring; so
// IngestTo requires a backpressure mode that never evicts (FailProducer or
// DropNewest).

var (
	// ErrEvictingMode: IngestTo was called on a bus whose backpressure mode
	// evicts events (DropOldest, Sample), where tickets cannot be tracked.
	ErrEvictingMode = errors.New("bus: IngestTo needs FailProducer or DropNewest backpressure")
	// ErrNotDispatched: the adapter did not take the event (the batch was
	// given up after its retries, or the shard stopped before the event's
	// outcome was known). The event may or may not be stored: a retry can
	// duplicate it but never loses it.
	ErrNotDispatched = errors.New("bus: event not confirmed dispatched")
)

// Ticket identifies one event accepted by IngestTo.
type Ticket struct {
	Shard     uint16
	Timestamp uint64
	// n is the event's 1-based position in its shard's ring; w is the
	// shard incarnation's worker, so a ticket never matches a later
	// incarnation of the same shard id.
	n uint64
	w *worker
}

// IngestTo ingests one event into shard id, which must be active. It does
// not copy payload: the caller must not modify it afterwards. A full ring
// is ErrBackpressure.
func (b *Bus) IngestTo(id uint16, payload []byte) (Ticket, error) {
	if m := b.cfg.Backpressure.Mode; m == ModeDropOldest || m == ModeSample {
		return Ticket{}, ErrEvictingMode
	}
	s := b.mgr.Get(id)
	if s == nil || s.State() != shard.Active {
		return Ticket{}, fmt.Errorf("shard %d: %w", id, ErrUnrouted)
	}
	if err := b.acquire(s); err != nil {
		if errors.Is(err, errStopped) {
			err = ErrUnrouted
		}
		return Ticket{}, fmt.Errorf("shard %d: %w", id, err)
	}
	defer release(s)
	b.mu.Lock()
	w := b.workers[id]
	b.mu.Unlock()
	if w == nil || w.s != s {
		return Ticket{}, fmt.Errorf("shard %d: %w", id, ErrUnrouted)
	}
	ev := adapter.Event{Payload: payload, Timestamp: b.now()}
	n, ok := s.PushTicket(ev)
	if !ok {
		if b.cfg.Backpressure.Mode == ModeDropNewest {
			s.Rejected.Add(1)
		}
		return Ticket{}, fmt.Errorf("shard %d: %w", id, ErrBackpressure)
	}
	return Ticket{Shard: id, Timestamp: ev.Timestamp, n: n, w: w}, nil
}

// IngestAny ingests one keyless event into the least-loaded active shard
// (the selection IngestRaw makes) and returns its ticket.
func (b *Bus) IngestAny(payload []byte) (Ticket, error) {
	if m := b.cfg.Backpressure.Mode; m == ModeDropOldest || m == ModeSample {
		return Ticket{}, ErrEvictingMode
	}
	h := randv2.Uint64()
	s, err := b.route(func() *shard.Shard { return b.mgr.Select(h) })
	if err != nil {
		return Ticket{}, err
	}
	id := s.ID
	release(s)
	return b.IngestTo(id, payload)
}

// WaitDispatched returns nil once the adapter has stored t's event, an
// error wrapping ErrNotDispatched if it will not be confirmed, or the
// context's error.
func (b *Bus) WaitDispatched(ctx context.Context, t Ticket) error {
	w := t.w
	if w == nil {
		return fmt.Errorf("bus: zero ticket: %w", ErrNotDispatched)
	}
	for {
		w.progressMu.Lock()
		handled, failedFrom, progress := w.handled, w.failedFrom, w.progress
		w.progressMu.Unlock()
		if handled >= t.n {
			if failedFrom != 0 && t.n >= failedFrom {
				return fmt.Errorf("shard %d: batch given up: %w", t.Shard, ErrNotDispatched)
			}
			return nil
		}
		select {
		case <-progress:
		case <-w.batchDone:
			// The worker exited; its last batch published progress before
			// batchDone closed, so one more look decides.
			w.progressMu.Lock()
			handled, failedFrom = w.handled, w.failedFrom
			w.progressMu.Unlock()
			if handled >= t.n && (failedFrom == 0 || t.n < failedFrom) {
				return nil
			}
			return fmt.Errorf("shard %d stopped before the event was confirmed: %w", t.Shard, ErrNotDispatched)
		case <-ctx.Done():
			return fmt.Errorf("bus: wait for shard %d: %w", t.Shard, ctx.Err())
		}
	}
}

// ShardLoad is the number of events waiting in shard id's ring, for
// callers that route keyless events themselves (a node skips shards that
// are fenced for a handoff and picks the least loaded of the rest).
func (b *Bus) ShardLoad(id uint16) (int, bool) {
	s := b.mgr.Get(id)
	if s == nil || s.State() != shard.Active {
		return 0, false
	}
	return s.Load(), true
}
