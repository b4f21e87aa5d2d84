package redex

import (
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"sync"
	"sync/atomic"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Log is one append-only event log. All methods are safe for concurrent use.
type Log struct {
	opts Options
	log  *slog.Logger

	// mu is the state lock: it guards st, subs, disk, closed and poison.
	mu     sync.Mutex
	st     store
	subs   []*Tail
	closed bool
	// poison is a sticky disk error (failed fsync or unrecoverable write):
	// once set, appends fail with it.
	poison error
	lastTS int64
	clock  func() int64
	coarse *coarseClock // the default clock; nil when Options.Clock is set
	disk   *diskLog
	inline [8]byte  // AppendInline's payload, kept here so it does not escape
	crcs   []uint32 // AppendReplicatedBatch's payload checksums, reused

	// Lock-free mirrors of the state for String. They are updated under mu
	// after each change and may trail it momentarily.
	nextSeqAtomic  atomic.Uint64
	firstSeqAtomic atomic.Uint64
	subsAtomic     atomic.Int64
}

// Open opens a log. With Options.Dir empty it is in memory; otherwise the
// segment files in Dir are recovered (truncating a torn tail) and appends
// are written through to them.
func Open(opts Options) (*Log, error) {
	o := opts.withDefaults()
	if o.FirstSeq == Live {
		return nil, fmt.Errorf("redex: Options.FirstSeq %d is Live and leaves no seq to assign: %w", o.FirstSeq, ErrSeqExhausted)
	}
	l := &Log{opts: o, log: o.Logger.With("redex", o.Name), clock: o.Clock}
	if l.clock == nil {
		var src clockSource
		if o.hooks != nil {
			src = o.hooks.clock
		}
		l.coarse = newCoarseClock(src)
	}
	if o.Dir == "" {
		l.st.init(o.FirstSeq)
		l.publish()
		return l, nil
	}
	if err := l.openDisk(); err != nil {
		if errors.Is(err, ErrCorrupt) {
			err = fmt.Errorf("%w (redex.Repair cuts the log back to the last good frame before the damage; it is never done automatically)", err)
		}
		return nil, err
	}
	l.publish()
	return l, nil
}

// publish refreshes the lock-free mirrors; callers hold mu.
func (l *Log) publish() {
	l.nextSeqAtomic.Store(l.st.next)
	l.firstSeqAtomic.Store(l.st.first)
}

// Append appends one heap entry and returns its seq. Every append refuses
// with ErrSeqExhausted once NextSeq is Live (math.MaxUint64): that value
// is never an entry's seq.
func (l *Log) Append(payload []byte) (uint64, error) {
	return l.AppendWithFlags(payload, 0)
}

// AppendWithFlags appends one heap entry with caller flags. FlagInline is
// refused with ErrInlineOnHeap: inline entries go through AppendInline.
func (l *Log) AppendWithFlags(payload []byte, flags Flags) (uint64, error) {
	if flags&FlagInline != 0 {
		return 0, ErrInlineOnHeap
	}
	if len(payload) > l.opts.MaxPayload {
		return 0, &PayloadTooLargeError{Size: len(payload), Max: l.opts.MaxPayload}
	}
	return l.appendOne(payload, flags, crc32.Checksum(payload, castagnoli))
}

// AppendInline appends an entry whose exactly-8-byte payload is carried in
// the index record. A HeapOnly log refuses it with ErrInlineOnHeap.
func (l *Log) AppendInline(v [8]byte) (uint64, error) {
	if l.opts.HeapOnly {
		return 0, ErrInlineOnHeap
	}
	l.mu.Lock()
	l.inline = v
	return l.appendLocked(l.inline[:], FlagInline, crc32.Checksum(l.inline[:], castagnoli))
}

func (l *Log) appendOne(p []byte, flags Flags, crc uint32) (uint64, error) {
	l.mu.Lock()
	return l.appendLocked(p, flags, crc)
}

// appendLocked appends one entry; it is called with mu held and releases it.
func (l *Log) appendLocked(p []byte, flags Flags, crc uint32) (uint64, error) {
	if err := l.writableLocked(); err != nil {
		l.mu.Unlock()
		return 0, err
	}
	seq := l.st.next
	if seq == Live {
		l.mu.Unlock()
		return 0, fmt.Errorf("append at seq %d: %w", seq, ErrSeqExhausted)
	}
	ts := l.stampLocked()
	if l.disk != nil {
		if err := l.disk.write(l, seq, ts, flags, crc, p); err != nil {
			l.mu.Unlock()
			return 0, err
		}
	}
	l.st.put(ts, p, flags, crc)
	l.nextSeqAtomic.Store(l.st.next)
	if len(l.subs) > 0 {
		l.deliverLocked(seq, seq+1)
	}
	l.mu.Unlock()
	return seq, nil
}

// AppendBatch appends payloads as consecutive entries under one lock hold.
// ok is false, with first == 0, when payloads is empty: nothing was
// appended. Either every payload is appended or none is.
func (l *Log) AppendBatch(payloads [][]byte) (first uint64, ok bool, err error) {
	if len(payloads) == 0 {
		return 0, false, nil
	}
	for _, p := range payloads {
		if len(p) > l.opts.MaxPayload {
			return 0, false, &PayloadTooLargeError{Size: len(p), Max: l.opts.MaxPayload}
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writableLocked(); err != nil {
		return 0, false, err
	}
	first = l.st.next
	if uint64(len(payloads)) > Live-first {
		return 0, false, fmt.Errorf("batch of %d at seq %d: %w", len(payloads), first, ErrSeqExhausted)
	}
	ts := l.stampLocked()
	if l.disk != nil {
		if err := l.disk.writeBatch(l, first, ts, payloads); err != nil {
			return 0, false, err
		}
	}
	for _, p := range payloads {
		l.st.put(ts, p, 0, crc32.Checksum(p, castagnoli))
	}
	l.nextSeqAtomic.Store(l.st.next)
	if len(l.subs) > 0 {
		l.deliverLocked(first, l.st.next)
	}
	return first, true, nil
}

func (l *Log) writableLocked() error {
	if l.closed {
		return ErrClosed
	}
	return l.poison
}

// stampLocked returns the timestamp for the next append, never earlier than
// the previous one so age retention can cut a prefix.
func (l *Log) stampLocked() int64 {
	var ts int64
	if l.coarse != nil {
		ts = l.coarse.now() // a direct call: this is on every append
	} else {
		ts = l.clock()
	}
	if ts < l.lastTS {
		ts = l.lastTS
	}
	l.lastTS = ts
	return ts
}

// NextSeq returns the seq the next append will get. It reads under the
// state lock so a seq that an in-flight append assigns and then rolls back
// is never observed.
func (l *Log) NextSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.next
}

// FirstSeq returns the oldest retained seq (== NextSeq when empty).
func (l *Log) FirstSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.first
}

// Len returns the number of retained entries.
func (l *Log) Len() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.len()
}

// Bytes returns the retained bytes as counted by byte retention.
func (l *Log) Bytes() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.bytes
}

// Get returns the entry at seq: ErrPruned if retention dropped it,
// ErrNotFound if it was not appended yet.
func (l *Log) Get(seq uint64) (Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq < l.st.first {
		return Entry{}, fmt.Errorf("get seq %d (first retained %d): %w", seq, l.st.first, ErrPruned)
	}
	if seq >= l.st.next {
		return Entry{}, fmt.Errorf("get seq %d (next %d): %w", seq, l.st.next, ErrNotFound)
	}
	return l.st.entry(seq), nil
}

// Read returns up to limit entries starting at from. It returns ErrPruned
// if from is below FirstSeq, and no entries if from >= NextSeq.
func (l *Log) Read(from uint64, limit int) ([]Entry, error) {
	return l.ReadInto(nil, from, limit)
}

// ReadInto is Read appending to dst, so a caller can reuse a buffer.
func (l *Log) ReadInto(dst []Entry, from uint64, limit int) ([]Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if from < l.st.first {
		return dst, fmt.Errorf("read from seq %d (first retained %d): %w", from, l.st.first, ErrPruned)
	}
	for seq := from; seq < l.st.next && limit > 0; seq++ {
		dst = append(dst, l.st.entry(seq))
		limit--
	}
	return dst, nil
}

// Sync flushes disk-mode segments to stable storage regardless of the fsync
// policy. It returns the log's sticky error if an earlier fsync failed.
func (l *Log) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if l.poison != nil {
		return l.poison
	}
	if l.disk == nil {
		return nil
	}
	return l.disk.syncLocked(l)
}

// Close ends every tail with ErrClosed and, in disk mode, fsyncs and closes
// the segment files. A sticky fsync error is returned, not swallowed.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	for _, t := range l.subs {
		t.endLocked(ErrClosed)
	}
	l.subs = nil
	l.subsAtomic.Store(0)
	var err error
	var d *diskLog
	if l.disk != nil {
		d = l.disk
		err = errors.Join(l.poison, d.closeLocked(l))
	}
	l.mu.Unlock()
	if d != nil {
		d.stopWorker()
	}
	return err
}

// String describes the log from lock-free atomics only, so formatting a
// log never waits on (or deadlocks against) the state lock.
func (l *Log) String() string {
	mode := "memory"
	if l.opts.Dir != "" {
		mode = "disk"
	}
	return fmt.Sprintf("redex.Log{name=%q mode=%s next_seq_atomic=%d first_seq_atomic=%d tails_atomic=%d}",
		l.opts.Name, mode, l.nextSeqAtomic.Load(), l.firstSeqAtomic.Load(), l.subsAtomic.Load())
}
