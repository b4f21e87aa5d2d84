// Package memlog is a small in-memory shard log for compute tests and
// benchmarks: dense seqs from 0, ranged reads and a wait for new entries.
package memlog

import (
	"context"
	"sync"

	"github.com/purplerain/mesh-operator/engine/compute"
)

// Log is an append-only in-memory log. Safe for concurrent use.
type Log struct {
	mu      sync.Mutex
	events  []compute.Event
	changed chan struct{}
}

// New returns an empty log.
func New() *Log { return &Log{changed: make(chan struct{})} }

// Append adds an entry with the next seq and returns that seq.
func (l *Log) Append(key, payload []byte, time int64) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	seq := uint64(len(l.events))
	l.events = append(l.events, compute.Event{Seq: seq, Key: key, Time: time, Payload: payload})
	close(l.changed)
	l.changed = make(chan struct{})
	return seq
}

// Len is the number of entries.
func (l *Log) Len() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return uint64(len(l.events))
}

// Read implements compute.Log.
func (l *Log) Read(from uint64, limit int) ([]compute.Event, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if from >= uint64(len(l.events)) {
		return nil, nil
	}
	end := min(uint64(len(l.events)), from+uint64(limit))
	return append([]compute.Event(nil), l.events[from:end]...), nil
}

// Wait implements compute.Log.
func (l *Log) Wait(ctx context.Context, from uint64) error {
	for {
		l.mu.Lock()
		if from < uint64(len(l.events)) {
			l.mu.Unlock()
			return nil
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
