// Package replication copies shard logs from their owner to followers over
// TCP, framed with engine/wire packets (DESIGN.md §5–§7, issue 7 item 4).
//
// The owner runs a Server over its shard logs (a LogSource); each follower
// runs one Follower per followed shard, which keeps a local redex.Log holding
// the owner's entries at the owner's seqs, timestamps and flags.
//
// # Protocol
//
// One TCP connection carries one shard's subscription. Every packet is a
// wire packet (64-byte header, payload of length-prefixed event frames;
// sealed on the wire when the connection starts with a session handshake,
// see session.go, and opened before this protocol reads it) with header
// subprotocol Subprotocol (0x0052), StreamID the shard and
// Sequence numbering the sender's packets 1, 2, 3, … (a gap or repeat is a
// protocol violation). Each event frame is one message whose first byte is
// its kind; all integers are little endian:
//
//	subscribe  (follower→owner, alone in the first packet)
//	           1 | shard u16 | from u64 | epoch u64 | hasPrev u8 (0|1)
//	             [| prevTime i64 | prevFlags u32 | prevCRC u32] | nameLen u8 | name | tokenLen u16 | token
//	accept     2 | shard u16 | ownerEpoch u64 | from u64 | ownerNext u64 | ownerFirst u64
//	refuse     3 | shard u16 | code u8 | ownerEpoch u64 | seq u64 | reasonLen u16 | reason
//	entry      4 | seq u64 | time i64 (Unix ns) | flags u32 | payload (the rest of the frame)
//	ack        5 | shard u16 | next u64
//	heartbeat  6 | shard u16 | ownerEpoch u64 | ownerNext u64
//
// The follower sends subscribe with from = its log's NextSeq, its epoch, the
// identity of its entry at from-1 (stamp, flags, CRC-32C of the payload; absent
// when its log is empty), its member name and a permission token in
// identity's binary form; the owner answers accept or refuse (refuse closes
// the connection). The owner refuses with diverged when from is beyond its
// next seq, or when its own entry at from-1 differs from the follower's: the
// refusal's seq is where the follower must cut its log (the owner's next
// seq, or from-1, so a divergent suffix is walked back one entry per
// attempt); a resync-subscribe is answered with a resync instead
// (divergence.go). After accept the owner streams entry messages (backfill by
// reads, then live by a redex tail; many entries per packet) and a
// heartbeat every HeartbeatInterval;
// the follower appends each packet's entries with one AppendReplicatedBatch
// and answers with an ack of its next seq, and acks again every AckInterval.
// A refuse can also end a running stream (lagged, too large, unavailable).
//
// A follower with FollowerOptions.Resync subscribes with resync-subscribe
// (resync.go); when the owner pruned its next seq, or finds its log
// diverged (divergence.go), the owner answers with its log head, its daemon snapshots for the shard (when its
// LogSource is a DaemonSnapshotter) and then the stream from the head, and
// the follower hands the snapshots to StageResync (a node stores them
// durably), resets its log to the head (redex ResetTo) and hands them to
// Resync before it appends anything. With TrustedOwnerKeys the follower
// runs none of this for an owner whose handshake a trusted key did not
// sign.
//
// # Invariants (pinned by tests)
//
//   - The owner streams a shard only to a token that verifies with
//     identity.ScopeReplicate for that shard; anything else is refused
//     (*DeniedError) before a single entry is sent.
//   - Epochs never go back: the owner refuses a subscription whose epoch is
//     older than its own, and a follower refuses an accept or heartbeat from
//     an owner at an older epoch than its own (*StaleEpochError, naming who
//     refused). Both are retried with backoff, since a topology push settles
//     them. Mid-stream both sides compare epochs at every heartbeat, so a
//     stream outlives an epoch change on either side by at most one
//     HeartbeatInterval.
//   - A follower's log holds exactly the owner's entries in seq order: no
//     gap and no duplicate at the backfill/live seam, across reconnections
//     and follower restarts (it resumes from its own NextSeq), because
//     AppendReplicated accepts only seq == NextSeq.
//   - Nothing is skipped silently: if the owner pruned what the follower
//     needs, the follower stops with *LaggedError, or with
//     FollowerOptions.Resync drops its whole log, restarts it at the
//     owner's head and counts the resync in its status (its log then holds
//     exactly the owner's retained entries); if the follower holds seqs
//     the owner never had, or its last entry is not the owner's, it is
//     resynced the same way with FollowerOptions.Resync, and otherwise
//     stops with *DivergedError (or, when allowed by TruncateDiverged,
//     cuts them off loudly and resubscribes). A slow follower is
//     not lagged: when its live tail overflows, the owner catches it up by
//     reads from where it stopped.
//   - An ack is never beyond what the owner sent (else the connection is
//     dropped) and a follower's acknowledged position never moves back.
//     WaitReplicated(shard, seq) returns only once some follower acknowledged
//     a position above seq, i.e. appended it (and synced it with
//     SyncBeforeAck).
//   - Close stops every goroutine the package started.
//
// The log-matching check compares one entry, not a chain: a divergent suffix
// whose last entry has the owner's exact stamp, flags and payload would go
// unnoticed. The repair does not make it worse: a diverged follower is
// resynced (its whole log replaced, divergence.go), never cut back to a
// matching entry, so no suffix is kept on a false match; a stamp is a
// nanosecond time, so a false match needs the same payload written at the
// same nanosecond. TODO(issue 7): an exact divergence check needs each
// entry stamped with the epoch that wrote it (as Raft does with terms),
// carried in the entry message and in redex's frame (a format change on
// disk); TruncateDiverged, which cuts back, would need it before anyone
// turns it on.
//
// An entry larger than one packet travels as fragments (fragment.go) and
// is reassembled by the reader within a bound, so the protocol above sees
// whole entries only. Entries larger than MaxEntryPayload (the RedEX
// default payload limit, which the node's logs keep) are refused with
// RefuseTooLarge and the follower stops.
//
// Packets are sealed when the follower starts with a wire session handshake
// (session.go; followers do by default, and the node runtime's owners
// require it): the protocol reader below the session sees opened packets,
// and a tampered, replayed or foreign packet ends the connection.
package replication
