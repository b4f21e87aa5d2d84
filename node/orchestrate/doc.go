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
//   - The cutover is also recorded only after the new owner's daemons for
//     the shard (status: daemons, daemonNext) have folded its log to the
//     fenced owner's next seq, so the daemon state the new owner serves at
//     the cutover equals what the old owner had.
//   - Promotion waits out the failed owner's lease (measured from the last
//     push the caller saw succeed) before any other node owns its shards, so
//     two owners never accept writes for one shard.
//   - Handoffs of distinct shards may run at once (Handoffs): each step is
//     applied to the latest recorded topology at the next epoch, one record
//     at a time, so the records form one history and resuming from the last
//     one resumes every handoff. Pushes always send the latest record.
//   - With ResumableCatchUp, a new owner that has not caught up within
//     StepTimeout leaves the follow step recorded (ErrCatchingUp): the shard
//     stays writable at its owner and the caller bounds the whole move.
//   - Failpoints (Driver.Failpoint, the Step* constants) sit after every
//     data-plane call; one that fires stops the operation where it is with
//     nothing rolled back (ErrFailpoint), which is what an operator crash
//     leaves, so tests restart the caller at each of them.
//
// Daemons move with a shard as warm copies, not by the six-phase migration
// of engine/compute/migration. Every node runs the declared daemons on the
// shards it follows as well as those it owns, fed from its own copy of the
// shard's log (DESIGN.md §6: standbys keep warm copies). A daemon's state
// is a deterministic fold of the log, so once the new owner's log equals
// the fenced owner's and its daemons folded all of it, their state is the
// old owner's: the migration's Snapshot, Transfer and Restore phases would
// ship state the new owner already has, Replay is the catch-up wait above,
// and Cutover is the topology's. The old owner keeps its copies as a
// follower (topology.WithMove), and a promoted standby owns its warm
// copies at once. The price is CPU on followers (every daemon runs on
// every copy of a shard); the gain is that a handoff or failover moves no
// state over the network and a daemon can never be lost between nodes.
//
// A daemon whose feed halted (a user daemon's Process error) moves like
// any other and does not hold a handoff back: status leaves halted feeds
// out of daemonNext, and the new owner's warm copy, folding the same log
// deterministically, halts at the same entry with the same error (every
// node restarts halted feeds at each topology change, so a transient
// failure is retried alike). When the old owner's retention has pruned
// the log past the shard's start, the new owner cannot backfill from seq
// 0: replication resyncs it from the old owner's log head and daemon
// snapshots, so its copies arrive with the old owner's state, a halted one
// at its halted position (where it halts again on the pruned log, as it
// does on the old owner). TODO(issue 7): a Process error that is not
// deterministic (it failed on the old owner but not on the warm copy, or
// the reverse) leaves the new owner with the warm copy's state; moving
// the old owner's halted state at the cutover needs a snapshot transfer
// (the six-phase migration over the wire port).
package orchestrate
