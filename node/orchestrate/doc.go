// Package orchestrate drives the nodes of one cluster through the operations
// that change who owns a shard: a fenced handoff from one active to another,
// the promotion of a follower after its owner failed, and the drain of a
// leaving node by successive handoffs. The operator (and the process tests)
// call it; it talks to nodes only through adminclient.Client.
//
// Invariants:
//
//   - Record before push: every topology is passed to the Driver's Record
//     callback, which must succeed, before any node sees it. The operator
//     persists its record there, so a restarted operator resumes from a
//     topology no node is ahead of.
//   - Every step is resumable from the recorded topology alone: a handoff
//     whose recorded topology has the shard fenced at its old owner
//     continues with the catch-up and the cutover; one whose shard already
//     has the new owner only re-pushes. Repeating a finished operation
//     changes nothing.
//   - A handoff aborted before the cutover is recorded (context ended, a
//     wait timed out, a node refused) pushes a topology at a new epoch that
//     leaves the old owner owning the shard, unfenced. Nothing acknowledged
//     is lost: the old owner's log was never cut.
//   - The cutover is recorded only after the new owner's log reaches the
//     fenced owner's next seq and that seq stopped moving, so every event
//     the old owner acknowledged is in the new owner's log.
//   - Promotion waits out the failed owner's lease (measured from the last
//     push the caller saw succeed) before any other node owns its shards, so
//     two owners never accept writes for one shard.
package orchestrate
