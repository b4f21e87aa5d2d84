package compute

import (
	"errors"
	"fmt"
)

// MeshDaemon is a stateful (or stateless) event processor bound to a shard.
//
// A host calls a daemon's methods one at a time, never concurrently. Process
// must be deterministic in the daemon's state and the event, so that a
// snapshot plus a replay of the events after it reproduces the state exactly;
// a daemon that returns an error from Process must leave its state unchanged.
type MeshDaemon interface {
	// Name identifies the daemon instance (usually its declared name).
	Name() string
	// Stateful reports whether Snapshot/Restore carry state. A stateless
	// daemon migrates by cursor only.
	Stateful() bool
	// Process applies one event and returns the outputs it produced.
	Process(ev Event) (outputs [][]byte, err error)
	// Snapshot serializes the daemon's state. Equal states must give equal
	// bytes: migration and promotion tests compare snapshots.
	Snapshot() ([]byte, error)
	// Restore replaces the daemon's state with a snapshot's bytes. A
	// Restore that returns an error must leave the previous state intact:
	// a standby whose sync fails keeps serving from it.
	Restore(state []byte) error
}

var (
	// ErrDuplicate is returned for an event whose seq was already applied.
	// Callers that redeliver after an ambiguous failure may ignore it.
	ErrDuplicate = errors.New("compute: event already applied")
	// ErrGap is returned for an event past the next expected seq.
	ErrGap = errors.New("compute: event past the next expected seq")
	// ErrFenced is returned while a host is fenced for migration cutover.
	ErrFenced = errors.New("compute: daemon fenced for cutover")
	// ErrNotFound is returned for an unknown daemon id.
	ErrNotFound = errors.New("compute: no such daemon")
	// ErrExists is returned when adding a daemon id that is already hosted.
	ErrExists = errors.New("compute: daemon already hosted")
	// ErrUnknownKind is returned by Kinds.New for an unregistered kind.
	ErrUnknownKind = errors.New("compute: unknown daemon kind")
	// ErrCapturing is returned by BeginCapture when a capture is running.
	ErrCapturing = errors.New("compute: capture already running")
)

// MovedError is returned by Hosts for a daemon that migrated away.
type MovedError struct {
	Daemon string
	Node   string
}

func (e *MovedError) Error() string {
	return fmt.Sprintf("compute: daemon %q moved to node %q", e.Daemon, e.Node)
}

// ProcessError wraps an error returned by a daemon's Process for one event.
type ProcessError struct {
	Daemon string
	Seq    uint64
	Err    error
}

func (e *ProcessError) Error() string {
	return fmt.Sprintf("compute: daemon %q failed at seq %d: %v", e.Daemon, e.Seq, e.Err)
}

func (e *ProcessError) Unwrap() error { return e.Err }
