// Package compute runs stateful event processors (daemons) over a shard's
// events and gives the migration and group packages the pieces they move:
// a daemon's snapshot and the sequence number it covers.
//
// A MeshDaemon is user code. A Host owns exactly one daemon and feeds it
// events strictly in sequence order; Hosts is the node's table of running
// hosts by daemon id; Kinds is the registry of daemon factories by kind,
// with the built-in kinds registered by package compute/daemons.
//
// Invariants (each pinned by a test):
//
//   - A host applies event seq n only when its cursor says n is next: an
//     event already applied is refused with ErrDuplicate and one past a gap
//     with ErrGap, so no event is applied twice or out of order. The cursor
//     saturates at math.MaxUint64: after the event with the largest seq is
//     applied, nothing further is accepted (it never wraps to 0).
//   - A Process call that returns an error has not been applied: the cursor
//     does not move and the same event may be delivered again. Daemons must
//     leave their state unchanged when they return an error.
//   - No lock of the Hosts table and no host bookkeeping lock is held while
//     daemon code runs (Process, Snapshot, Restore), and snapshot I/O (the
//     SnapshotStore) runs with no lock held at all. Calls into one daemon are
//     serialized by that host's execution lock, which guards nothing but the
//     daemon and its cursor, so daemon code may call back into its host's
//     read-only accessors or into the Hosts table without deadlocking.
//   - Two racing snapshot starts (two Host.Snapshot calls, or one racing the
//     periodic snapshot) produce two MeshDaemon.Snapshot calls, one after the
//     other; they are not coalesced. A daemon whose Snapshot is not idempotent
//     must single-flight at its own layer.
//   - A snapshot and its cursor are taken under one execution-lock hold, so
//     restoring the snapshot and then applying events from Snapshot.Next on
//     reproduces the daemon exactly.
//   - A fenced host (migration cutover) refuses deliveries with ErrFenced
//     until it is unfenced (abort: the source stays authoritative) or
//     removed from its Hosts table (the daemon moved; the table then answers
//     with a *MovedError naming the new node).
package compute
