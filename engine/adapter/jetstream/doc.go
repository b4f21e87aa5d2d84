// Package jetstream is the NATS JetStream adapter: each shard is one stream
// ("<Prefix>_<shard>") with one subject ("<prefix>.<shard>"), written with
// nats.go's async publish and read back by sequence.
//
// Invariants (pinned by tests against a real nats-server with JetStream):
//
//   - Every message carries its dedup id as Nats-Msg-Id, so a batch retried
//     after a partial publish is de-duplicated by the server within the
//     stream's duplicate window. OnBatch returns only after every message
//     of the batch is acknowledged (the PubAck means the server stored it).
//   - Shard ids come in as uint16 from the bus; ids parsed from the server
//     (stream names in ListShards) above 65 535 are a fatal error, never
//     truncated onto another shard. PollShard propagates a fatal error
//     instead of logging and skipping.
//   - A stored message that is not a well-formed envelope for its shard is
//     a fatal error, never an empty event. (The batch being assembled is
//     discarded with it: fatal is not retryable.)
//   - Cold streams: PollShard reads the stream state first and returns
//     without any message lookups when the stream is empty (FirstSeq == 0
//     or no messages). That is the only early bail: a populated stream with
//     deletion gaps (say seqs 1, 500 and 1000) is walked past every gap,
//     using next-message-for-subject lookups so a gap costs no round trips.
//   - Cursor arithmetic saturates: the position after seq is seq+1, or seq
//     itself at math.MaxUint64; the limit+1 look-ahead saturates at MaxInt.
//   - Healthy is bounded by RequestTimeout even if the caller's context has
//     no deadline.
package jetstream
