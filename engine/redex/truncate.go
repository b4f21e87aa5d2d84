package redex

import (
	"errors"
	"fmt"
	"os"
)

// ErrTruncated ends every tail of a log that TruncateFrom cut back: entries
// the subscriber may already hold no longer exist, so it must re-read.
var ErrTruncated = errors.New("redex: log truncated")

// TruncateFrom drops the entries [seq, NextSeq), so the next append gets
// seq again. It exists for replicas: after a failover under ackPolicy
// Leader a follower can hold a suffix the new owner never had, and must cut
// it before it replicates the new owner's history. seq >= NextSeq is a
// no-op; seq below FirstSeq is refused with ErrPruned. Every tail ends with
// ErrTruncated. Payload slices already handed out stay valid and unchanged:
// the heap space of dropped entries is never reused.
//
// In disk mode the segments after seq's segment are deleted (newest first)
// and seq's segment is cut at seq's frame and fsynced, so a crash part way
// leaves a log that ends somewhere in [seq, old NextSeq) and the caller
// truncates again. A failure poisons the log.
func (l *Log) TruncateFrom(seq uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	if seq >= l.st.next {
		return nil
	}
	if seq < l.st.first {
		return fmt.Errorf("truncate from seq %d (first retained %d): %w", seq, l.st.first, ErrPruned)
	}
	if l.disk != nil {
		if err := l.disk.truncateLocked(l, seq); err != nil {
			l.poison = fmt.Errorf("redex: truncate: %w", err)
			return l.poison
		}
	}
	l.st.truncateFrom(seq)
	l.lastTS = 0
	if seq > l.st.first {
		l.lastTS = l.st.rec(seq - 1).ts
	}
	l.publish()
	for _, t := range l.subs {
		t.endLocked(ErrTruncated)
	}
	clear(l.subs)
	l.subs = l.subs[:0]
	l.subsAtomic.Store(0)
	return nil
}

// truncateFrom forgets the entries [seq, next); first <= seq < next.
func (s *store) truncateFrom(seq uint64) {
	for q := seq; q < s.next; q++ {
		s.bytes -= entryBytes(s.rec(q))
	}
	// Keep the heap chunks up to the one holding the last kept payload and
	// seal that one (mark it full), so later appends never write over
	// bytes a reader of a dropped entry may still hold.
	keep := 0
	for q := seq; q > s.first; q-- {
		if r := s.rec(q - 1); r.n > 0 {
			keep = int(r.chunk-s.heapBase) + 1
			c := &s.heap[keep-1]
			c.used = len(c.buf)
			c.last = q - 1
			break
		}
	}
	clear(s.heap[keep:])
	s.heap = s.heap[:keep]
	s.next = seq
	need := 0
	if seq > s.first {
		need = int((seq-1)>>idxChunkShift-s.idxBase) + 1
	}
	clear(s.idx[need:])
	s.idx = s.idx[:need]
	if need == 0 {
		s.idxBase = seq >> idxChunkShift
	}
}

// truncateLocked cuts the segment files back so they end right before seq.
func (d *diskLog) truncateLocked(l *Log, seq uint64) error {
	k := len(d.segs) - 1
	for k > 0 && d.segs[k].base > seq {
		k--
	}
	sg := d.segs[k]
	b, err := os.ReadFile(sg.path)
	if err != nil {
		return fmt.Errorf("read segment %s: %w", sg.path, err)
	}
	base, frames, _, _ := decodeSegment(b, l.opts.MaxPayload, l.opts.HeapOnly)
	if base != sg.base || seq < base || seq-base > uint64(len(frames)) {
		return fmt.Errorf("%w: %s holds seqs [%d, %d), cannot cut at %d", ErrCorrupt, sg.path, base, base+uint64(len(frames)), seq)
	}
	off := int64(segHeaderSize)
	for _, f := range frames[:seq-base] {
		off += frameHeaderSize + int64(len(f.payload))
	}
	if err := d.active.Close(); err != nil {
		return fmt.Errorf("close active segment: %w", err)
	}
	for i := len(d.segs) - 1; i > k; i-- {
		if err := os.Remove(d.segs[i].path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove segment: %w", err)
		}
		d.segs = d.segs[:i]
	}
	if err := truncateFile(sg.path, off); err != nil {
		return err
	}
	if err := syncDir(d.dir); err != nil {
		return err
	}
	f, err := os.OpenFile(sg.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("reopen active segment: %w", err)
	}
	d.active, d.size = d.wrap(f), off
	d.unsyncedN, d.unsyncedBytes = 0, 0
	return nil
}
