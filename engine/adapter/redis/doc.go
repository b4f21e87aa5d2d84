// Package redis is the Redis Streams adapter: shard n is the stream
// "<Prefix>:<n>", each batch is written with one pipelined round of XADDs,
// and polls read with XRANGE.
//
// Invariants (pinned by tests against a real redis-server):
//
//   - Every entry carries field "d", its dedup id (adapter.Batch.DedupID),
//     and field "e", the envelope (shard, timestamp, payload). Redis has no
//     server-side de-duplication, so a batch retried after a partial
//     pipeline leaves duplicates that consumers drop with package dedup.
//   - Positions are stream ids: Position{Hi: ms, Lo: seq}; the resume
//     point after an entry is its id's successor, saturating at the largest
//     id instead of wrapping to 0-0.
//   - XRANGE asks for limit+1 entries to learn HasMore; limit+1 saturates.
//   - An entry without a well-formed envelope, or with an unparsable id, is
//     a fatal error, never an empty event.
//   - Healthy sends PING bounded by CommandTimeout even when the caller's
//     context has no deadline, so a hung server cannot hang the caller.
package redis
