package bus

// Stats is a snapshot of the bus's counters.
type Stats struct {
	// EventsIngested counts events accepted into a ring.
	EventsIngested uint64
	// EventsDropped counts every event that will not reach the adapter:
	// refused by DropNewest or Sample, evicted by DropOldest or Sample,
	// given up after retries, or abandoned by Close or an aborted
	// activation. FailProducer refusals are not drops (the producer keeps
	// the event).
	EventsDropped uint64
	// BatchesDispatched and EventsDispatched count successful OnBatch
	// calls (stranded-event flushes included).
	BatchesDispatched uint64
	EventsDispatched  uint64
	// DispatchFailures counts batches given up on.
	DispatchFailures uint64
	// ShutdownWasLossy is set when Close (or an activation abort) had to
	// abandon events.
	ShutdownWasLossy bool
	ActiveShards     int
	Shards           int
}

// Stats returns the counters. Counters of removed shards are kept in the
// bus totals through the dispatched/dropped counters only.
func (b *Bus) Stats() Stats {
	st := Stats{
		BatchesDispatched: b.stats.batches.Load(),
		EventsDispatched:  b.stats.eventsDispatched.Load(),
		DispatchFailures:  b.stats.dispatchFailures.Load(),
		EventsDropped:     b.stats.lost.Load() + b.removedDropped.Load(),
		EventsIngested:    b.removedIngested.Load(),
		ShutdownWasLossy:  b.lossy.Load(),
		ActiveShards:      b.mgr.ActiveCount(),
	}
	for _, s := range b.mgr.All() {
		st.EventsIngested += s.Ingested.Load()
		st.EventsDropped += s.Evicted.Load() + s.Rejected.Load()
		st.Shards++
	}
	return st
}
