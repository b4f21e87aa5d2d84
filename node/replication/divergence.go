package replication

// Divergence repair: a follower whose log is no longer a prefix of the
// owner's (it holds seqs the owner never had, or its last entry is not the
// owner's entry at that seq) is resynced like a lagged one, so its copy
// matches the owner's again. This is what happens to an old owner that
// kept writes the new owner never got (under ackPolicy Leader, after a
// failover) when it later follows the new owner.
//
// Wire: nothing new. A follower with FollowerOptions.Resync sends
// resync-subscribe (resync.go) for every subscription, carrying as always
// its next seq and the identity of its last entry (stamp, flags, CRC-32C
// of the payload). The owner compares that identity with its own entry at
// the same seq when it still retains it. When the follower is ahead of the
// owner (from beyond the owner's next seq) or the identities differ, the
// owner answers resync (its log head, daemon snapshots, then the stream
// from the head) instead of refusing with diverged. The follower drops its
// whole log (redex TruncateFrom its first seq; seqs never go back, so when
// its first seq is above the owner's head it restarts there and skips the
// streamed entries below it, as though its own retention had pruned them),
// and hands the snapshots to StageResync and Resync, which replace the
// daemon copies fed from the diverged entries.
//
// Compatibility:
//
//   - A plain subscribe (a follower without Resync, or one that sends no
//     previous-entry identity because its log is empty) is answered as
//     before: a diverged refusal, which stops the follower unless
//     TruncateDiverged.
//   - An owner from before divergence repair answers a diverged
//     resync-subscribe with that refusal too; the follower then behaves
//     as it always did.
//   - A follower from before divergence repair sends resync-subscribe only
//     after a lagged refusal, and refuses a resync whose head is not
//     beyond its next seq (a protocol error, retried). It meets one only
//     if its log diverged between the lagged refusal and the next
//     attempt (an ownership change in between), where it used to stop
//     with a *DivergedError; either way it needs the current version.
//
// The check compares one entry, not a chain (see the package doc): a
// diverged suffix whose last entry matches the owner's exactly is not
// detected. The repair itself never keeps a suffix on a match: it drops
// the whole log.
//
// Safety: a resync drops the follower's copy in favour of the owner's, so
// it must only meet an owner that is authoritative. A memory-mode node that
// restarted empty holds no topology and serves nothing until the operator
// pushes it one, and the operator's lease keeper withholds ownership from
// such a node (controllers/leases.go); it is failed over instead.

// DivergedResyncs counts the resyncs this server answered to a diverged
// follower (they are also counted in Resyncs).
func (s *Server) DivergedResyncs() uint64 { return s.divergedResyncs.Load() }
