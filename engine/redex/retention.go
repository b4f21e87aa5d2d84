package redex

import (
	"fmt"
	"time"
)

// SweepResult reports what one Sweep dropped.
type SweepResult struct {
	Dropped  uint64 // entries dropped
	FirstSeq uint64 // oldest retained seq afterwards
}

// Sweep applies the retention policy as of now. Each bound proposes how
// many oldest entries to drop; the largest proposal wins. An entry whose
// timestamp equals now-MaxAge is kept. The node calls Sweep periodically;
// appends never sweep on their own.
func (l *Log) Sweep(now time.Time) (SweepResult, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return SweepResult{}, ErrClosed
	}
	drop := retentionDrop(&l.st, l.opts.Retention, now.UnixNano())
	if drop > 0 {
		l.st.dropPrefix(drop)
		l.publish()
		if l.disk != nil {
			if err := l.disk.retainLocked(l); err != nil {
				return SweepResult{Dropped: drop, FirstSeq: l.st.first}, fmt.Errorf("redex sweep: %w", err)
			}
		}
	}
	return SweepResult{Dropped: drop, FirstSeq: l.st.first}, nil
}

// retentionDrop returns how many of the oldest entries r asks to drop.
func retentionDrop(st *store, r Retention, now int64) uint64 {
	n := st.len()
	var drop uint64
	if r.MaxEvents > 0 && n > r.MaxEvents {
		drop = n - r.MaxEvents
	}
	if r.MaxBytes > 0 && st.bytes > r.MaxBytes {
		excess := st.bytes - r.MaxBytes
		var k, freed uint64
		for k < n && freed < excess {
			freed += entryBytes(st.rec(st.first + k))
			k++
		}
		drop = max(drop, k)
	}
	if r.MaxAge > 0 {
		cutoff := now - int64(r.MaxAge)
		var k uint64
		// Timestamps are monotonic in seq, so the expired entries are a
		// prefix. Strictly-before drops; equal to the cutoff is kept.
		for k < n && st.rec(st.first+k).ts < cutoff {
			k++
		}
		drop = max(drop, k)
	}
	return drop
}
