package bus

import "time"

// ShardTiming is what a shard's workers measured last. The bus's own
// scaling monitor samples the same values (monitor.go); a caller that
// runs its own policy (a mesh node reporting load to its operator) reads
// them here.
type ShardTiming struct {
	// Push is how long the oldest event of the last chunk the drain
	// worker took had waited in the ring.
	Push time.Duration
	// Flush is how long the last batch took to reach the adapter,
	// retries included. It keeps its value while the shard is idle: a
	// caller sampling over time compares Processed between samples to
	// tell a fresh measurement from an old one.
	Flush time.Duration
	// Processed counts the events the shard's workers dispatched or gave
	// up so far.
	Processed uint64
}

// ShardTiming returns shard id's latest timings; ok is false when the bus
// has no workers for id (not added, or removed), and also while a
// topology change holds the bus (adding or removing a shard can take as
// long as a drain): a sampler never waits behind one, it misses a sample.
func (b *Bus) ShardTiming(id uint16) (ShardTiming, bool) {
	if !b.mu.TryLock() {
		return ShardTiming{}, false
	}
	w := b.workers[id]
	b.mu.Unlock()
	if w == nil {
		return ShardTiming{}, false
	}
	return ShardTiming{
		Push:      time.Duration(w.pushLat.Load()),
		Flush:     time.Duration(w.flushLat.Load()),
		Processed: w.processed.Load(),
	}, true
}
