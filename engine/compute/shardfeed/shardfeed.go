// Package shardfeed feeds a compute.Host from a shard's redex log through
// a cortex fold driver, starting at the host's cursor.
//
// Invariants (pinned by tests against a real redex log):
//
//   - The driver starts at the host's cursor, so a host restored from a
//     snapshot resumes exactly after it: no entry is applied twice and none
//     is skipped (the driver halts with redex.ErrPruned rather than fold
//     past a gap).
//   - A daemon error halts the feed (cortex Stop policy): the failing entry
//     is not applied, IsRunning turns false, and a new feed started later
//     resumes at that same entry.
//   - A fenced host (migration cutover) halts the feed the same way, with an
//     error wrapping compute.ErrFenced: the node stops feeding a daemon that
//     moved, and restarts the feed after an aborted migration, which then
//     resumes at the host's cursor.
//   - An entry the host already applied (ErrDuplicate, e.g. replayed into it
//     by a migration or standby sync) is skipped, not an error.
//
// The driver's fold runs under cortex's state lock; the state it guards is
// only the feed's Progress counter, never the daemon, so daemon code may
// still call back into its host and the Hosts table.
package shardfeed

import (
	"errors"

	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/cortex"
	"github.com/purplerain/mesh-operator/engine/redex"
)

// Progress is the feed's folded state: what it applied and skipped.
type Progress struct {
	Applied uint64
	Skipped uint64
}

// Start launches a driver that applies l's entries to h from h's cursor on.
// emit (may be nil) receives each entry's outputs. Close the driver to
// stop feeding.
func Start(l *redex.Log, h *compute.Host, emit compute.Emit) (*cortex.Driver[Progress], error) {
	fold := func(p *Progress, e redex.Entry) error {
		out, err := h.Deliver(compute.Event{Seq: e.Seq, Time: e.Time, Payload: e.Payload})
		if errors.Is(err, compute.ErrDuplicate) {
			p.Skipped++
			return nil
		}
		if err != nil {
			return err
		}
		p.Applied++
		if emit != nil {
			emit(e.Seq, out)
		}
		return nil
	}
	return cortex.Start(l, Progress{}, fold, cortex.Options[Progress]{
		Start:   cortex.FromSeq(h.Cursor().Next()),
		OnError: cortex.Stop,
	})
}
