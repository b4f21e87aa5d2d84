package redex

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// RepairReport says what Repair found and cut.
type RepairReport struct {
	// Dir is the log directory repaired.
	Dir string
	// Cut says Repair changed the directory; false means it found no
	// damage and left everything as it was.
	Cut bool
	// Segment is the file in which the damage starts, Offset the byte
	// offset of the first bad byte in it (0 when the segment's header was
	// bad and the whole file was dropped), and Reason what was wrong.
	Segment string
	Offset  int64
	Reason  string
	// Next is the seq the repaired log continues at: every entry below it
	// that was on disk is kept, every entry from it on is gone.
	Next uint64
	// DroppedFrames counts the intact frames (checksums good) that were
	// after the damage and were dropped with it; the damaged bytes
	// themselves are not counted. DroppedSegments counts later segment
	// files deleted whole, and DroppedBytes every byte removed.
	DroppedFrames   int
	DroppedSegments int
	DroppedBytes    int64
}

func (r RepairReport) String() string {
	if !r.Cut {
		return fmt.Sprintf("redex: %s: no damage found, nothing cut", r.Dir)
	}
	return fmt.Sprintf("redex: %s: cut at seq %d (damage in %s at offset %d: %s): dropped %d intact frames, %d later segments, %d bytes",
		r.Dir, r.Next, filepath.Base(r.Segment), r.Offset, r.Reason, r.DroppedFrames, r.DroppedSegments, r.DroppedBytes)
}

// Repair cuts a disk log that Open refuses with ErrCorrupt back to the last
// good frame before its first damage, so Open accepts it again. Every entry
// before the damage is kept; the damaged bytes, every frame after them in
// that segment and every later segment are deleted, intact or not, because
// a log's seqs must stay dense. The report says how many intact frames and
// bytes that dropped: entries that may have been acknowledged, which a
// replica can fetch again from its owner but an owner loses for good.
// Damage among entries retention already dropped (below the FIRST mark,
// in a segment that also holds retained ones) costs no retained entry:
// those after it are moved to a segment of their own starting at the mark.
//
// Repair is never called by Open: it is an explicit, logged operator
// decision (the node's storage.repairCorruptLogs). It must not run while a
// Log has the directory open. It fsyncs every change, and a crash part way
// leaves a directory Repair can be run on again. Only segment damage is
// repaired: a corrupt FIRST (low-water) file is returned as an error.
func Repair(opts Options) (RepairReport, error) {
	o := opts.withDefaults()
	rep := RepairReport{Dir: o.Dir}
	if o.Dir == "" {
		return rep, errors.New("redex: Repair needs a disk log (Options.Dir)")
	}
	lw, err := readLowWater(o.Dir)
	if err != nil {
		return rep, fmt.Errorf("redex: repair %s: %w (the FIRST file is not repaired)", o.Dir, err)
	}
	segs, err := listSegments(o.Dir)
	if err != nil {
		return rep, err
	}
	// Segments below the FIRST mark hold only dropped entries; Open skips
	// them, so damage there needs no repair.
	k := 0
	for k+1 < len(segs) && segs[k+1].base <= lw {
		k++
	}
	segs = segs[k:]

	var next uint64
	for i, sg := range segs {
		b, err := os.ReadFile(sg.path)
		if err != nil {
			return rep, fmt.Errorf("redex: repair: read segment %s: %w", sg.path, err)
		}
		base, frames, valid, derr := decodeSegment(b, o.MaxPayload, o.HeapOnly)
		whole := false
		switch {
		case derr != nil && valid < segHeaderSize:
			whole, rep.Reason = true, derr.Error()
		case base != sg.base:
			whole, rep.Reason = true, fmt.Sprintf("header base %d does not match its name", base)
		case i > 0 && base != next:
			whole, rep.Reason = true, fmt.Sprintf("starts at seq %d, previous segment ends at %d", base, next)
		case derr != nil:
			rep.Reason = derr.Error()
		default:
			next = base + uint64(len(frames))
			continue
		}
		rep.Cut, rep.Segment = true, sg.path
		if cut := base + uint64(len(frames)); !whole && i == 0 && cut < lw {
			// The damage is among entries retention already dropped
			// (below the FIRST mark, still in the file until the whole
			// segment goes). The retained entries after it may be
			// intact: keep them in a segment of their own at the mark
			// rather than cut at a dead entry and lose them all.
			at, end, salvaged, ok := retainedAfterDamage(b, valid, lw, o)
			if ok {
				path, err := writeSegment(o.Dir, lw, b[at:end])
				if err != nil {
					return rep, fmt.Errorf("redex: repair: %w", err)
				}
				// A crash from here on leaves sg below a segment that
				// starts at the mark: stale, skipped and deleted by Open
				// (and by a Repair run again).
				if err := os.Remove(sg.path); err != nil {
					return rep, fmt.Errorf("redex: repair: remove segment %s: %w", sg.path, err)
				}
				if err := syncDir(o.Dir); err != nil {
					return rep, err
				}
				rep.Offset, rep.Reason = int64(valid), rep.Reason+" (below the FIRST mark: only dropped entries damaged)"
				rep.DroppedBytes += int64(len(b) - (end - at))
				o.Logger.Warn("redex: repair kept the retained entries of a segment damaged below the FIRST mark", "dir", o.Dir,
					"segment", sg.path, "offset", valid, "first", lw, "next", salvaged, "kept_to", path)
				if end == len(b) {
					// All of it was intact: go on checking the segments
					// after it.
					segs[i] = segment{base: lw, path: path}
					next = salvaged
					continue
				}
				// More damage above the mark: cut there, as below.
				rep.Offset, rep.Next = int64(end), salvaged
				rep.DroppedFrames += countIntact(b, end, salvaged, o)
				return rep, dropLater(o, segs[i+1:], &rep)
			}
		}
		if whole {
			if i == 0 {
				// Keep the seq counter where this segment started, so a
				// reopened empty log does not go back to seq 0.
				next = max(lw, sg.base)
			}
			rep.Offset, rep.Next = 0, next
			rep.DroppedFrames += countIntact(b, segHeaderSize, sg.base, o)
			rep.DroppedBytes += int64(len(b))
			if i == 0 && next > lw {
				// The mark first, durably: removing the segment before
				// it would let a crash in between reopen the directory
				// with nothing saying where the seqs went, and the log
				// would start over below seqs it already handed out.
				if err := writeLowWater(o.Dir, next); err != nil {
					return rep, err
				}
			}
			if err := os.Remove(sg.path); err != nil {
				return rep, fmt.Errorf("redex: repair: remove segment %s: %w", sg.path, err)
			}
		} else {
			rep.Offset = int64(valid)
			rep.Next = base + uint64(len(frames))
			rep.DroppedFrames += countIntact(b, valid, rep.Next, o)
			rep.DroppedBytes += int64(len(b) - valid)
			if err := truncateFile(sg.path, int64(valid)); err != nil {
				return rep, err
			}
		}
		return rep, dropLater(o, segs[i+1:], &rep)
	}
	rep.Next = max(next, lw)
	return rep, nil
}

// dropLater deletes the segments after a cut and logs the repair. They go
// newest first, so a crash part way leaves a log that still ends at a
// segment boundary.
func dropLater(o Options, later []segment, rep *RepairReport) error {
	for j := len(later) - 1; j >= 0; j-- {
		lb, err := os.ReadFile(later[j].path)
		if err != nil {
			return fmt.Errorf("redex: repair: read segment %s: %w", later[j].path, err)
		}
		rep.DroppedFrames += countIntact(lb, segHeaderSize, later[j].base, o)
		rep.DroppedBytes += int64(len(lb))
		if err := os.Remove(later[j].path); err != nil {
			return fmt.Errorf("redex: repair: remove segment %s: %w", later[j].path, err)
		}
		rep.DroppedSegments++
	}
	if err := syncDir(o.Dir); err != nil {
		return err
	}
	o.Logger.Warn("redex: repaired a corrupt log by cutting it", "dir", o.Dir, "segment", rep.Segment,
		"offset", rep.Offset, "next", rep.Next, "dropped_frames", rep.DroppedFrames,
		"dropped_segments", rep.DroppedSegments, "dropped_bytes", rep.DroppedBytes, "reason", rep.Reason)
	return nil
}

// retainedAfterDamage finds, in a segment image damaged at offset valid
// below the FIRST mark first, the frame of seq first and the intact frames
// that follow it densely: they are b[at:end], ending at seq next. ok is
// false when the frame of seq first is not intact.
func retainedAfterDamage(b []byte, valid int, first uint64, o Options) (at, end int, next uint64, ok bool) {
	at, seq, ok := intactFrameAfter(b, valid, first, o.MaxPayload, o.HeapOnly)
	if !ok || seq != first {
		return 0, 0, 0, false
	}
	end, next = at, first
	for end < len(b) {
		_, n, err := decodeFrame(b[end:], next, o.MaxPayload, o.HeapOnly)
		if err != nil {
			break
		}
		end += n
		next++
	}
	return at, end, next, true
}

// writeSegment writes a segment file of base holding frames (whole encoded
// frames, seqs dense from base), durably: a temporary file, fsynced, then
// renamed into place and the directory fsynced. It returns its path.
func writeSegment(dir string, base uint64, frames []byte) (string, error) {
	path := filepath.Join(dir, segName(base))
	tmp := path + ".tmp" // not a segment name: Open ignores a leftover
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return "", fmt.Errorf("create segment: %w", err)
	}
	if _, err := f.Write(append(appendSegHeader(nil, base), frames...)); err != nil {
		f.Close()
		return "", fmt.Errorf("write segment: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", fmt.Errorf("sync segment: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("close segment: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("install segment: %w", err)
	}
	return path, syncDir(dir)
}

// countIntact counts the intact frames at or after offset off of a segment
// image, the first of which could have seq want or later.
func countIntact(b []byte, off int, want uint64, o Options) int {
	n := 0
	for off < len(b) {
		at, seq, ok := intactFrameAfter(b, off, want, o.MaxPayload, o.HeapOnly)
		if !ok {
			break
		}
		_, size, err := decodeFrame(b[at:], seq, o.MaxPayload, o.HeapOnly)
		if err != nil {
			break // intactFrameAfter just decoded it
		}
		n++
		off, want = at+size, seq+1
	}
	return n
}

// listSegments lists dir's segment files, oldest first.
func listSegments(dir string) ([]segment, error) {
	names, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("redex: list dir: %w", err)
	}
	var segs []segment
	for _, de := range names {
		name := de.Name()
		if !strings.HasSuffix(name, segSuffix) {
			continue
		}
		base, perr := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
		if perr != nil {
			continue
		}
		segs = append(segs, segment{base: base, path: filepath.Join(dir, name)})
	}
	slices.SortFunc(segs, func(a, b segment) int { return cmpU64(a.base, b.base) })
	return segs, nil
}
