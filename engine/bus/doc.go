// Package bus is the engine's sharded event bus: producers ingest events,
// each event lands in one shard's lock-free ring, and per-shard workers
// batch the rings' contents into the adapter (by default the shard's RedEX
// log).
//
// Per shard there are two goroutines: a drain worker that moves events from
// the ring into chunks, and a batch worker that assembles chunks into
// batches (adaptive size between Batch.Min and Batch.Max, dispatched when
// full or when the oldest event has waited Batch.MaxDelay) and calls
// Adapter.OnBatch, retrying transient errors with jittered exponential
// backoff (RetryBackoff) and recording the reason of every attempt.
//
// The workers time what they do: how long the oldest event of a chunk
// waited in the ring (push) and how long a batch took to reach the
// adapter (flush). The scaling monitor samples them (monitor.go), and
// ShardTiming hands them, with ShardLoad's ring occupancy, to a caller
// that runs its own policy (a mesh node reports them to its operator).
//
// Invariants (pinned by tests named after them):
//
//   - Every ingest returns the shard and timestamp, or a typed error:
//     ErrBackpressure (ring full, nothing was accepted; retry later),
//     ErrSampled (dropped by the Sample policy; do not retry), ErrUnrouted
//     (no routable shard; retry once the topology settles), ErrClosed.
//   - Backpressure modes: DropOldest evicts the oldest event and accepts
//     the new one; DropNewest refuses the new one (ErrBackpressure, counted
//     dropped); FailProducer refuses it without counting a drop (the
//     producer still owns it); Sample(n) admits every n-th event under
//     pressure by evicting the oldest and refuses the rest with ErrSampled.
//   - Accounting: every accepted event is eventually dispatched, or counted
//     in Stats.EventsDropped (evicted, given up after retries, or lost to a
//     shutdown deadline). Nothing disappears uncounted.
//   - Removing a shard drains it, stops its workers, marks it Stopped,
//     waits for producers already routed to it (two zero reads of its
//     in-flight count), then dispatches the events they left stranded in
//     its ring (they count as dispatched). A push never lands in a ring
//     nobody will read.
//   - An aborted activation awaits the shard's batch worker for at most
//     2×AdapterTimeout so the batch it holds is dispatched, not dropped;
//     only if the worker is still parked after that are its events counted
//     as dropped.
//   - Shutdown stops admission, then waits until it observes zero in-flight
//     ingests (summed over the shards' counters) on two consecutive passes,
//     then drains every shard. If the deadline forces it to abandon events,
//     Close returns an error wrapping ErrLossyShutdown, Stats reports
//     ShutdownWasLossy and the count is in EventsDropped.
//   - In-flight counters are 64-bit, so no producer count can wrap them.
//   - Ingest timestamps are nanoseconds from a monotonic baseline captured
//     when the bus is created (never a hard-coded zero), never decreasing.
//   - Acknowledged ingest: IngestTo returns a Ticket, and WaitDispatched
//     returns nil only after the adapter stored that event; a batch given up
//     (or a shard stopped first) is ErrNotDispatched, never a silent success.
//     A ticket belongs to one incarnation of a shard: re-adding a removed
//     shard id never confirms the old incarnation's events. IngestTo refuses
//     evicting backpressure modes, where ring order and dispatch order differ.
//   - With NoBaseShards the bus starts with no shard; the caller adds the
//     shards it wants (a mesh node: the cluster shards it owns).
//   - Flush returns once every event accepted before the call has been
//     dispatched or counted as dropped, then flushes the adapter.
package bus
