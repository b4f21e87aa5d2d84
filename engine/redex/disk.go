package redex

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// segFile is the part of *os.File a segment needs; tests wrap it to inject
// faults.
type segFile interface {
	io.Writer
	Sync() error
	Truncate(size int64) error
	Close() error
}

// testHooks injects faults, a ticker for the interval fsync worker and the
// clocks read by the default append clock.
type testHooks struct {
	wrap   func(f segFile) segFile
	tick   <-chan time.Time
	ticked func() // called after each tick is handled
	clock  clockSource
}

const (
	segSuffix    = ".seg"
	lowWaterName = "FIRST"
)

type segment struct {
	base uint64
	path string
}

// diskLog is the disk-mode mirror of a Log. Its fields are guarded by the
// Log's state lock.
type diskLog struct {
	dir    string
	segs   []segment // oldest first; the last is the active segment
	active segFile
	size   int64 // bytes in the active segment
	scr    []byte

	policy         FsyncPolicy
	unsyncedN      uint64
	unsyncedBytes  uint64
	hooks          *testHooks
	stop, stopped  chan struct{}
	lowWater       uint64
	maxSegmentSize int64
}

func segName(base uint64) string { return fmt.Sprintf("%020d%s", base, segSuffix) }

// openDisk recovers the log from o.Dir and opens the active segment.
func (l *Log) openDisk() error {
	o := l.opts
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return fmt.Errorf("redex: create dir: %w", err)
	}
	d := &diskLog{dir: o.Dir, policy: o.Fsync, hooks: o.hooks, maxSegmentSize: o.SegmentBytes}
	lw, err := readLowWater(o.Dir)
	if err != nil {
		return err
	}
	d.lowWater = lw
	names, err := os.ReadDir(o.Dir)
	if err != nil {
		return fmt.Errorf("redex: list dir: %w", err)
	}
	for _, de := range names {
		name := de.Name()
		if !strings.HasSuffix(name, segSuffix) {
			continue
		}
		base, perr := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
		if perr != nil {
			continue
		}
		d.segs = append(d.segs, segment{base: base, path: filepath.Join(o.Dir, name)})
	}
	slices.SortFunc(d.segs, func(a, b segment) int { return cmpU64(a.base, b.base) })

	// A segment followed by one that starts at or below the FIRST mark
	// holds only dropped entries: a sweep crashed before deleting it. It is
	// neither read nor validated, and is deleted below.
	k := 0
	for k+1 < len(d.segs) && d.segs[k+1].base <= lw {
		k++
	}
	stale := d.segs[:k:k]
	d.segs = d.segs[k:]

	first := lw
	if len(d.segs) == 0 && lw == 0 {
		// No log here yet: a new log starts at Options.FirstSeq.
		first = o.FirstSeq
	}
	if len(d.segs) > 0 {
		first = max(first, d.segs[0].base)
	}
	l.st.init(first)
	next := first
	for i, sg := range d.segs {
		last := i == len(d.segs)-1
		b, err := os.ReadFile(sg.path)
		if err != nil {
			return fmt.Errorf("redex: read segment %s: %w", sg.path, err)
		}
		base, frames, valid, derr := decodeSegment(b, o.MaxPayload, o.HeapOnly)
		if derr != nil && !last {
			return fmt.Errorf("%w: %s: %w", ErrCorrupt, sg.path, derr)
		}
		if derr != nil {
			// Only a bad suffix with nothing intact after it is a torn
			// write; an intact frame after the bad bytes is corruption.
			from, want := valid, base+uint64(len(frames))
			if valid < segHeaderSize {
				from, want = segHeaderSize, sg.base
			}
			// Cutting here would drop frames that may have been fsynced:
			// that is Repair's job, run only when an operator asks.
			if at, seq, ok := intactFrameAfter(b, from, want, o.MaxPayload, o.HeapOnly); ok {
				return fmt.Errorf("%w: %s: %w, but an intact frame (seq %d) follows at offset %d", ErrCorrupt, sg.path, derr, seq, at)
			}
			if valid < segHeaderSize {
				// Even the header is torn: the crash hit right after
				// creating the file. Rewrite the header from its name.
				base, valid = sg.base, 0
			}
			l.log.Warn("redex: truncating torn segment tail", "segment", sg.path, "valid_bytes", valid, "file_bytes", len(b), "err", derr)
			if err := truncateFile(sg.path, int64(valid)); err != nil {
				return err
			}
		}
		if base != sg.base {
			return fmt.Errorf("%w: %s: header base %d does not match its name", ErrCorrupt, sg.path, base)
		}
		if i > 0 && base != next {
			return fmt.Errorf("%w: %s: starts at seq %d, previous segment ends at %d", ErrCorrupt, sg.path, base, next)
		}
		next = base + uint64(len(frames))
		for _, f := range frames {
			if f.seq < l.st.first {
				continue // dropped by retention before the restart
			}
			l.st.put(f.ts, f.payload, f.flags, f.crc)
			l.lastTS = max(l.lastTS, f.ts)
		}
		if last {
			d.size = int64(max(valid, 0))
		}
	}
	if next < first {
		// The segments end below the FIRST mark. Retention fsyncs that
		// mark but the active segment may not have been (FsyncNever,
		// Interval, EveryN(n>1)), so a power cut can take frames back
		// past it. Every frame left is below the mark, so every segment
		// is stale: start a new segment at the mark rather than append
		// seq first right after a lower seq in the old one, a gap the
		// next recovery would cut as a torn tail, synced entries and all.
		stale = append(stale, d.segs...)
		d.segs = nil
		next = first
	}
	if l.st.next != next {
		// Every retained entry was dropped: keep the seq counter going.
		l.st.init(next)
	}
	if len(d.segs) == 0 || d.size < segHeaderSize {
		if len(d.segs) > 0 {
			// The last segment lost even its header: replace it.
			if err := os.Remove(d.segs[len(d.segs)-1].path); err != nil {
				return fmt.Errorf("redex: remove headerless segment: %w", err)
			}
			d.segs = d.segs[:len(d.segs)-1]
		}
		if err := d.createSegment(next); err != nil {
			return err
		}
	} else {
		f, err := os.OpenFile(d.segs[len(d.segs)-1].path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("redex: open active segment: %w", err)
		}
		d.active = d.wrap(f)
	}
	// Only now that a segment at or above the mark is durable: a crash
	// before this point leaves stale segments the next Open skips again.
	if err := removeSegments(d.dir, stale); err != nil {
		d.active.Close()
		return err
	}
	l.disk = d
	d.startWorker(l)
	return nil
}

// removeSegments deletes segments holding only dropped entries and syncs
// the directory.
func removeSegments(dir string, segs []segment) error {
	if len(segs) == 0 {
		return nil
	}
	for _, sg := range segs {
		if err := os.Remove(sg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("redex: remove stale segment: %w", err)
		}
	}
	return syncDir(dir)
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (d *diskLog) wrap(f segFile) segFile {
	if d.hooks != nil && d.hooks.wrap != nil {
		return d.hooks.wrap(f)
	}
	return f
}

func truncateFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("redex: open for truncation: %w", err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("redex: truncate torn tail: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("redex: sync truncated segment: %w", err)
	}
	return f.Close()
}

// createSegment starts a new active segment whose first seq is base.
func (d *diskLog) createSegment(base uint64) error {
	path := filepath.Join(d.dir, segName(base))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("redex: create segment: %w", err)
	}
	sf := d.wrap(f)
	if _, err := sf.Write(appendSegHeader(nil, base)); err != nil {
		sf.Close()
		return fmt.Errorf("redex: write segment header: %w", err)
	}
	if err := sf.Sync(); err != nil {
		sf.Close()
		return fmt.Errorf("redex: sync new segment: %w", err)
	}
	if err := syncDir(d.dir); err != nil {
		sf.Close()
		return err
	}
	d.active, d.size = sf, segHeaderSize
	d.segs = append(d.segs, segment{base: base, path: path})
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("redex: open dir for sync: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("redex: sync dir: %w", err)
	}
	return nil
}

// write appends the frame of one entry.
func (d *diskLog) write(l *Log, seq uint64, ts int64, flags Flags, crc uint32, p []byte) error {
	d.scr = appendFrame(d.scr[:0], seq, ts, flags, crc, p)
	return d.commit(l, seq, 1)
}

// writeBatch appends the frames of a batch with one write.
func (d *diskLog) writeBatch(l *Log, first uint64, ts int64, ps [][]byte) error {
	d.scr = d.scr[:0]
	for i, p := range ps {
		d.scr = appendFrame(d.scr, first+uint64(i), ts, 0, crc32.Checksum(p, castagnoli), p)
	}
	return d.commit(l, first, uint64(len(ps)))
}

// writeEntries appends the frames of replicated entries (their own seqs,
// stamps and flags; crcs[i] is es[i]'s payload checksum) with one write.
func (d *diskLog) writeEntries(l *Log, es []Entry, crcs []uint32) error {
	d.scr = d.scr[:0]
	for i, e := range es {
		d.scr = appendFrame(d.scr, e.Seq, e.Time, e.Flags, crcs[i], e.Payload)
	}
	return d.commit(l, es[0].Seq, uint64(len(es)))
}

// commit writes d.scr (frames for n entries from seq first) to the active
// segment and applies the fsync policy. On failure the segment is cut back
// to its previous size and nothing is committed; if even that fails, or an
// fsync fails, the log is poisoned.
func (d *diskLog) commit(l *Log, first, n uint64) error {
	if d.size > segHeaderSize && d.size+int64(len(d.scr)) > d.maxSegmentSize {
		if err := d.roll(first); err != nil {
			l.poison = err
			return err
		}
	}
	before := d.size
	if _, err := d.active.Write(d.scr); err != nil {
		err = fmt.Errorf("redex: write segment: %w", err)
		if terr := d.active.Truncate(before); terr != nil {
			l.poison = errors.Join(err, fmt.Errorf("redex: cut back failed write: %w", terr))
			return l.poison
		}
		return err
	}
	d.size += int64(len(d.scr))
	d.unsyncedN += n
	d.unsyncedBytes += uint64(len(d.scr))
	var syncNow bool
	switch d.policy.Mode {
	case FsyncEveryN:
		syncNow = d.unsyncedN >= d.policy.N
	case FsyncIntervalOrBytes:
		syncNow = d.policy.Bytes > 0 && d.unsyncedBytes >= d.policy.Bytes
	}
	if syncNow {
		if err := d.syncLocked(l); err != nil {
			// The entries are not committed: cut them back so a
			// restart cannot resurrect a seq that was reported failed.
			if terr := d.active.Truncate(before); terr != nil {
				l.poison = errors.Join(l.poison, fmt.Errorf("redex: cut back unsynced write: %w", terr))
			}
			d.size = before
			return l.poison
		}
	}
	return nil
}

// roll fsyncs and closes the active segment and starts a new one at base.
func (d *diskLog) roll(base uint64) error {
	if err := d.active.Sync(); err != nil {
		return fmt.Errorf("redex: sync segment before roll: %w", err)
	}
	if err := d.active.Close(); err != nil {
		return fmt.Errorf("redex: close segment: %w", err)
	}
	d.unsyncedN, d.unsyncedBytes = 0, 0
	return d.createSegment(base)
}

// syncLocked fsyncs the active segment. A failure poisons the log: after a
// failed fsync the kernel may have dropped the dirty pages, so no later
// write can be trusted to be durable.
func (d *diskLog) syncLocked(l *Log) error {
	if err := d.active.Sync(); err != nil {
		l.poison = fmt.Errorf("redex: fsync: %w", err)
		return l.poison
	}
	d.unsyncedN, d.unsyncedBytes = 0, 0
	return nil
}

func (d *diskLog) closeLocked(l *Log) error {
	var serr error
	if l.poison == nil {
		serr = d.syncLocked(l)
	}
	return errors.Join(serr, d.active.Close())
}

// retainLocked persists the retention low-water mark and deletes segments
// that hold only dropped entries. The active segment is always kept.
func (d *diskLog) retainLocked(l *Log) error {
	first := l.st.first
	if err := writeLowWater(d.dir, first); err != nil {
		return err
	}
	d.lowWater = first
	for len(d.segs) > 1 && d.segs[1].base <= first {
		if err := os.Remove(d.segs[0].path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("redex: remove segment: %w", err)
		}
		d.segs = d.segs[1:]
	}
	return nil
}

func readLowWater(dir string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, lowWaterName))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("redex: read low-water mark: %w", err)
	}
	if len(b) != 12 || crc32.Checksum(b[:8], castagnoli) != binary.LittleEndian.Uint32(b[8:]) {
		return 0, fmt.Errorf("%w: low-water mark file", ErrCorrupt)
	}
	return binary.LittleEndian.Uint64(b[:8]), nil
}

// writeLowWater replaces the low-water file atomically (temp + rename).
func writeLowWater(dir string, first uint64) error {
	b := binary.LittleEndian.AppendUint64(nil, first)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	tmp := filepath.Join(dir, lowWaterName+".tmp")
	_ = os.Remove(tmp) // a stale temp file from a crash must not block us
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("redex: write low-water mark: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("redex: write low-water mark: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("redex: sync low-water mark: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("redex: close low-water mark: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, lowWaterName)); err != nil {
		return fmt.Errorf("redex: install low-water mark: %w", err)
	}
	return syncDir(dir)
}

// startWorker runs the interval fsync goroutine for Interval and
// IntervalOrBytes policies.
func (d *diskLog) startWorker(l *Log) {
	var tick <-chan time.Time
	var ticker *time.Ticker
	switch {
	case d.hooks != nil && d.hooks.tick != nil:
		tick = d.hooks.tick
	case (d.policy.Mode == FsyncInterval || d.policy.Mode == FsyncIntervalOrBytes) && d.policy.Interval > 0:
		ticker = time.NewTicker(d.policy.Interval)
		tick = ticker.C
	default:
		return
	}
	d.stop, d.stopped = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(d.stopped)
		if ticker != nil {
			defer ticker.Stop()
		}
		for {
			select {
			case <-d.stop:
				return
			case <-tick:
				l.mu.Lock()
				if !l.closed && l.poison == nil && d.unsyncedBytes > 0 {
					if err := d.syncLocked(l); err != nil {
						l.log.Error("redex: interval fsync failed; log is now read-only", "err", err)
					}
				}
				l.mu.Unlock()
				if d.hooks != nil && d.hooks.ticked != nil {
					d.hooks.ticked()
				}
			}
		}
	}()
}

func (d *diskLog) stopWorker() {
	if d.stop != nil {
		close(d.stop)
		<-d.stopped
	}
}
