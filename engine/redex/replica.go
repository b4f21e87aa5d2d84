package redex

import (
	"fmt"
	"hash/crc32"
)

// AppendReplicated appends an entry copied from another log (the shard's
// owner) with the seq, timestamp and flags it has there, so a follower's log
// holds the same seqs and stamps as its owner's. It refuses an entry whose
// seq is not NextSeq with a *SeqGapError, one that would need seq
// math.MaxUint64 (Live) with ErrSeqExhausted, a stamp earlier than the previous
// entry's with ErrTimeRegression, an inline flag on anything but an 8-byte
// payload on a log that allows inline entries with ErrInlineOnHeap, and an
// oversize payload with a *PayloadTooLargeError. Nothing is appended on
// error. The payload is copied.
func (l *Log) AppendReplicated(e Entry) error {
	return l.AppendReplicatedBatch([]Entry{e})
}

// AppendReplicatedBatch is AppendReplicated for consecutive entries under
// one lock hold and (in disk mode) one write: either all are appended or
// none is.
func (l *Log) AppendReplicatedBatch(es []Entry) error {
	if len(es) == 0 {
		return nil
	}
	for i := range es {
		if err := l.checkReplicated(&es[i]); err != nil {
			return err
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	want, prevTS := l.st.next, l.lastTS
	for i := range es {
		w := want + uint64(i) // stops at Live below, so it never wraps
		if w == Live {
			return fmt.Errorf("replicated seq %d: %w", es[i].Seq, ErrSeqExhausted)
		}
		if es[i].Seq != w {
			return &SeqGapError{Got: es[i].Seq, Want: w}
		}
		if es[i].Time < prevTS {
			return fmt.Errorf("seq %d stamped %d, previous %d: %w", es[i].Seq, es[i].Time, prevTS, ErrTimeRegression)
		}
		prevTS = es[i].Time
	}
	l.crcs = l.crcs[:0]
	for i := range es {
		l.crcs = append(l.crcs, crc32.Checksum(es[i].Payload, castagnoli))
	}
	if l.disk != nil {
		if err := l.disk.writeEntries(l, es, l.crcs); err != nil {
			return err
		}
	}
	for i := range es {
		l.st.put(es[i].Time, es[i].Payload, es[i].Flags, l.crcs[i])
	}
	l.lastTS = prevTS
	l.nextSeqAtomic.Store(l.st.next)
	if len(l.subs) > 0 {
		l.deliverLocked(want, l.st.next)
	}
	return nil
}

// checkReplicated applies the checks that need no lock: size and the
// inline flag's shape (the same rules a disk frame must pass on reopen).
func (l *Log) checkReplicated(e *Entry) error {
	if len(e.Payload) > l.opts.MaxPayload {
		return &PayloadTooLargeError{Size: len(e.Payload), Max: l.opts.MaxPayload}
	}
	if e.Flags&FlagInline != 0 && (len(e.Payload) != 8 || l.opts.HeapOnly) {
		return fmt.Errorf("seq %d: inline flag with a %d-byte payload (heap only: %t): %w",
			e.Seq, len(e.Payload), l.opts.HeapOnly, ErrInlineOnHeap)
	}
	return nil
}
