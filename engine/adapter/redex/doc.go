// Package redex is the bus's default adapter: each shard's batches are
// appended to that shard's RedEX log (package engine/redex), in memory or
// on disk under Options.Dir/shard-<id>.
//
// Invariants (pinned by tests):
//
//   - A batch is appended with one AppendBatch call, which is all or
//     nothing, so a retried batch is never half-written twice.
//   - Positions are RedEX sequence numbers (Position.Lo; Hi must be 0).
//     PollShard returns entries at or after from, Next = last seq + 1
//     (saturating), and HasMore from a limit+1 read (saturating).
//   - A poll that starts before the oldest retained entry fails with an
//     error wrapping ErrBehindRetention; it never skips silently.
//   - Payloads are copied into the log's heap during OnBatch, so the bus
//     may reuse its batch buffers as soon as OnBatch returns.
package redex
