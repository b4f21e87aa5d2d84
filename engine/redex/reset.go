package redex

import (
	"errors"
	"fmt"
	"os"
)

// ResetTo drops every entry and restarts the log empty at seq, so the next
// append (local or replicated) gets seq. It exists for replicas: a
// follower whose owner already pruned past the follower's NextSeq cannot
// continue its log without a gap, so it restarts at the owner's first
// retained seq and copies the owner's entries from there. seq must be at
// least NextSeq (seqs never go back; cutting a suffix is TruncateFrom) and
// below Live. Every tail ends with ErrTruncated; payload slices already
// handed out stay valid and unchanged.
//
// In disk mode the new FIRST mark is fsynced before any segment is
// deleted, so a crash part way reopens as the reset log (the old segments
// are below the mark and deleted by Open). A failure poisons the log.
func (l *Log) ResetTo(seq uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	if seq == Live {
		return fmt.Errorf("reset to seq %d: %w", seq, ErrSeqExhausted)
	}
	if seq < l.st.next {
		return fmt.Errorf("redex: reset to seq %d below the next seq %d: seqs never go back", seq, l.st.next)
	}
	if l.disk != nil {
		if err := l.disk.resetLocked(seq); err != nil {
			l.poison = fmt.Errorf("redex: reset: %w", err)
			return l.poison
		}
	}
	l.st.reset(seq)
	l.lastTS = 0 // no previous entry to be stamped after
	l.publish()
	for _, t := range l.subs {
		t.endLocked(ErrTruncated)
	}
	clear(l.subs)
	l.subs = l.subs[:0]
	l.subsAtomic.Store(0)
	return nil
}

// reset forgets every entry and restarts the store empty at seq.
func (s *store) reset(seq uint64) {
	// Chunk ids keep growing, so no id ever names two chunks.
	s.heapBase += uint32(len(s.heap))
	clear(s.heap)
	s.heap = s.heap[:0]
	clear(s.idx)
	s.idx = s.idx[:0]
	s.first, s.next, s.bytes = seq, seq, 0
	s.idxBase = seq >> idxChunkShift
}

// resetLocked makes the directory hold an empty log starting at seq: the
// FIRST mark first (durable: every old segment is then below it), then the
// old segments go and a new active segment starts at seq.
func (d *diskLog) resetLocked(seq uint64) error {
	if err := writeLowWater(d.dir, seq); err != nil {
		return err
	}
	d.lowWater = seq
	if err := d.active.Close(); err != nil {
		return fmt.Errorf("close active segment: %w", err)
	}
	for i := len(d.segs) - 1; i >= 0; i-- {
		if err := os.Remove(d.segs[i].path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove segment: %w", err)
		}
		d.segs = d.segs[:i]
	}
	d.unsyncedN, d.unsyncedBytes = 0, 0
	return d.createSegment(seq)
}
