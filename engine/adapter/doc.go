// Package adapter defines the contract between the event bus and the store
// each shard's batches go to (a RedEX log, a JetStream stream, a Redis
// stream), plus the small value types both sides share.
//
// Every adapter implements Adapter: OnBatch appends one shard's batch,
// PollShard reads a shard from a Position, Flush waits for anything the
// adapter buffered, Healthy answers within a bounded time and Close releases
// the connection.
//
// Invariants shared by all adapters (each adapter package pins them with
// its own tests):
//
//   - Errors are classified. An error that wraps ErrFatal will fail the same
//     way on every retry (bad configuration, a malformed stored payload, an
//     out-of-range shard id); the bus stops retrying and reports it.
//     Anything else is treated as transient and retried with backoff.
//   - A malformed stored entry is never returned as an empty or partial
//     event: DecodeEnvelope rejects it with an error wrapping ErrFatal.
//   - Position is the resume point of a shard ("the next entry to read").
//     It is ordered, and PollResult.Next is never before the Position the
//     poll started from, so a consumer cursor built from it never moves
//     backwards.
//   - Arithmetic on caller-supplied limits and positions saturates instead
//     of wrapping: SatAdd1(math.MaxUint64) stays math.MaxUint64 and a
//     limit of math.MaxInt asks the store for math.MaxInt entries, not 0.
//   - Every entry an adapter writes carries a dedup id (DedupID) derived from
//     the producer nonce, shard, batch sequence and index, so a batch that
//     is retried after a partial write can be de-duplicated downstream.
package adapter
