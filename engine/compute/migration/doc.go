// Package migration moves a running daemon from one node to another in six
// phases: Snapshot → Transfer → Restore → Replay → Cutover → Complete.
//
// The source node's Migrator drives the phases and talks to the target
// node's Target through a Transport (the node package carries it over the
// network; memnet carries it in-process for tests). Messages: TakeSnapshot
// (start a migration on the source), SnapshotChunk (at most MaxChunk = 7000
// bytes of snapshot each), RestoreComplete, BufferedEvents, ReplayComplete,
// Cutover, Activate, ActivateAck, Cleanup and Failed (a reason; only
// ReasonNotReady is retriable).
//
// Invariants (each pinned by a test):
//
//   - The source is authoritative until the target acknowledges
//     activation. It keeps processing events during Snapshot, Transfer,
//     Restore and Replay and captures each one it applies after the
//     snapshot; it is fenced only during Cutover. An abort in any phase ends
//     the capture, unfences the source and tells the target to discard its
//     copy, so a failed migration loses and duplicates nothing.
//   - The snapshot and the start of the capture are taken under one hold of
//     the host's execution lock, so snapshot + captured events is exactly
//     the source's history.
//   - The target replays strictly in seq order from its daemon's cursor:
//     out-of-order events wait in a pending set, already-applied ones are
//     dropped. When a delivery fails, the delivered prefix stays applied
//     and the undelivered tail stays pending; the next drain resumes at
//     the failed event and never redelivers the prefix.
//   - The next expected seq saturates at math.MaxUint64 (compute.Cursor);
//     the drain never wraps to seq 0.
//   - Cutover completes only when the target's cursor equals the fenced
//     source cursor. Activation is idempotent (a resent Activate after a
//     lost ack gets the same ack); after an abort the target removes even
//     an activated copy. Only then does the source drop its copy and answer
//     with a *compute.MovedError naming the target.
//   - Every target handler tolerates a resend (the transport cannot tell a
//     lost request from a lost reply).
//   - Only the node that sent chunk 0 drives an inbound migration: any
//     other message for that daemon from another node is refused with
//     ReasonAlreadyMigrating, and its abort is ignored. (Messages carry no
//     attempt id, so a delayed message from an earlier attempt by the same
//     source is not told apart; see the known limit below.)
//
// Known limit: if an ActivateAck and then the abort that follows it are both
// lost, the target keeps an activated copy that no node routes to (the
// source never marked the daemon moved and stays authoritative). The
// source's next migration attempt to that target replaces it; a chunk for
// it from any other node is refused with ReasonAlreadyMigrating. Writes to
// such a copy must also be refused by the node's epoch fencing (node issue).
//
// Outputs produced while replaying on the target are discarded: the source
// already emitted them when it processed the same events.
package migration
