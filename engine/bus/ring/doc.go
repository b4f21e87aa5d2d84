// Package ring is the bounded, lock-free multi-producer multi-consumer
// queue behind each bus shard (Dmitry Vyukov's sequence-numbered slot
// array).
//
// Invariants (pinned by tests):
//
//   - FIFO: values leave in the order their pushes claimed slots.
//   - Bounded: Len never exceeds Cap; a push to a full ring fails instead of
//     blocking or overwriting, so the caller's backpressure policy decides.
//   - Every pushed value is popped exactly once (no loss, no duplicate)
//     under any mix of concurrent pushers and poppers; producers that evict
//     the oldest value (the bus's DropOldest mode) are ordinary poppers.
//   - Batch operations claim a contiguous run of slots with one CAS, so a
//     batch is never interleaved with another producer's values.
//   - Popped slots are zeroed so the ring never pins payload memory.
package ring
