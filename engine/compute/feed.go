package compute

import (
	"context"
	"errors"
	"fmt"
)

// Log is the part of a shard's log a host needs: ranged reads and a way to
// wait for the next entry. A shard's redex log feeds a host through
// package compute/shardfeed (a cortex fold driver) instead.
type Log interface {
	// Read returns up to limit entries starting at seq from, oldest first;
	// fewer (or none) at the end of the log.
	Read(from uint64, limit int) ([]Event, error)
	// Wait blocks until an entry with seq >= from exists or ctx is done.
	Wait(ctx context.Context, from uint64) error
}

// Emit receives a daemon's outputs for the event at seq.
type Emit func(seq uint64, outputs [][]byte)

// Feed applies log entries to h from its cursor on until ctx is done, the
// log fails, or the host refuses an event (fenced, or the daemon failed).
// It returns ctx.Err() on cancellation. Outputs go to emit (may be nil).
func Feed(ctx context.Context, h *Host, log Log, batch int, emit Emit) error {
	if batch <= 0 {
		batch = 256
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		c := h.Cursor()
		if c.Exhausted() {
			return fmt.Errorf("compute: feed daemon %q: cursor exhausted", h.ID())
		}
		evs, err := log.Read(c.Next(), batch)
		if err != nil {
			return fmt.Errorf("compute: feed daemon %q: read from %d: %w", h.ID(), c.Next(), err)
		}
		if len(evs) == 0 {
			if err := log.Wait(ctx, c.Next()); err != nil {
				return err
			}
			continue
		}
		for _, ev := range evs {
			out, err := h.Deliver(ev)
			if errors.Is(err, ErrDuplicate) {
				continue // someone else applied it (e.g. a concurrent Deliver)
			}
			if err != nil {
				return fmt.Errorf("compute: feed daemon %q: %w", h.ID(), err)
			}
			if emit != nil {
				emit(ev.Seq, out)
			}
		}
	}
}
