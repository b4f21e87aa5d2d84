package migration

import "fmt"

// Phase is a step of a migration. Phases advance strictly in order.
type Phase uint8

const (
	// PhaseSnapshot: the source snapshots the daemon and starts capturing
	// every event it applies after the snapshot.
	PhaseSnapshot Phase = iota + 1
	// PhaseTransfer: the snapshot travels to the target in chunks.
	PhaseTransfer
	// PhaseRestore: the target rebuilds the daemon from the snapshot.
	PhaseRestore
	// PhaseReplay: captured events are replayed on the target in seq order
	// while the source keeps processing.
	PhaseReplay
	// PhaseCutover: the source is fenced, the target replays the final
	// captured events and confirms it reached the source's cursor, then
	// activates.
	PhaseCutover
	// PhaseComplete: the source releases the daemon and routes to the
	// target; the target is authoritative.
	PhaseComplete
)

var phaseNames = [...]string{"", "Snapshot", "Transfer", "Restore", "Replay", "Cutover", "Complete"}

func (p Phase) String() string {
	if int(p) < len(phaseNames) && p != 0 {
		return phaseNames[p]
	}
	return fmt.Sprintf("Phase(%d)", uint8(p))
}

// Reason says why a migration failed. Only ReasonNotReady is retriable.
type Reason uint16

const (
	// ReasonNotReady: the target's compute runtime is not started yet.
	// Retriable: the source backs off and resends.
	ReasonNotReady Reason = iota
	// ReasonFactoryNotFound: the target has no factory for the daemon's kind.
	ReasonFactoryNotFound
	// ReasonComputeNotSupported: the target runs no compute runtime.
	ReasonComputeNotSupported
	// ReasonStateFailed: snapshot, restore, replay or a state check failed.
	ReasonStateFailed
	// ReasonAlreadyMigrating: a migration of this daemon is in flight, or
	// the target already hosts it authoritatively.
	ReasonAlreadyMigrating
	// ReasonTransportFailed: a message or its reply was lost.
	ReasonTransportFailed
	// ReasonNotReadyTimeout: the source gave up after its NotReady retries.
	ReasonNotReadyTimeout
	// ReasonAborted: the orchestrator aborted (sent to the target on abort
	// when no more specific reason applies, e.g. context cancellation).
	ReasonAborted
)

var reasonNames = [...]string{
	"NotReady", "FactoryNotFound", "ComputeNotSupported", "StateFailed",
	"AlreadyMigrating", "TransportFailed", "NotReadyTimeout", "Aborted",
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("Reason(%d)", uint16(r))
}

// Retriable reports whether the source should back off and retry. Only
// NotReady is.
func (r Reason) Retriable() bool { return r == ReasonNotReady }

func (r Reason) valid() bool { return int(r) < len(reasonNames) }

// Error is a failed migration: the phase it failed in and why. After an
// Error the source is authoritative (it was unfenced and kept the daemon).
type Error struct {
	Daemon string
	Phase  Phase
	Reason Reason
	// Attempts counts NotReady retries for ReasonNotReadyTimeout.
	Attempts int
	Err      error
}

func (e *Error) Error() string {
	return fmt.Sprintf("migration of %q failed in phase %s: %s: %v", e.Daemon, e.Phase, e.Reason, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }
