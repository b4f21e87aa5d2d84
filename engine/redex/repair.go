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
		if whole {
			if i == 0 {
				// Keep the seq counter where this segment started, so a
				// reopened empty log does not go back to seq 0.
				next = max(lw, sg.base)
			}
			rep.Offset, rep.Next = 0, next
			rep.DroppedFrames += countIntact(b, segHeaderSize, sg.base, o)
			rep.DroppedBytes += int64(len(b))
			if err := os.Remove(sg.path); err != nil {
				return rep, fmt.Errorf("redex: repair: remove segment %s: %w", sg.path, err)
			}
			if i == 0 && next > lw {
				if err := writeLowWater(o.Dir, next); err != nil {
					return rep, err
				}
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
		// Every later segment goes, newest first, so a crash part way
		// leaves a log that still ends at a segment boundary.
		for j := len(segs) - 1; j > i; j-- {
			lb, err := os.ReadFile(segs[j].path)
			if err != nil {
				return rep, fmt.Errorf("redex: repair: read segment %s: %w", segs[j].path, err)
			}
			rep.DroppedFrames += countIntact(lb, segHeaderSize, segs[j].base, o)
			rep.DroppedBytes += int64(len(lb))
			if err := os.Remove(segs[j].path); err != nil {
				return rep, fmt.Errorf("redex: repair: remove segment %s: %w", segs[j].path, err)
			}
			rep.DroppedSegments++
		}
		if err := syncDir(o.Dir); err != nil {
			return rep, err
		}
		o.Logger.Warn("redex: repaired a corrupt log by cutting it", "dir", o.Dir, "segment", sg.path,
			"offset", rep.Offset, "next", rep.Next, "dropped_frames", rep.DroppedFrames,
			"dropped_segments", rep.DroppedSegments, "dropped_bytes", rep.DroppedBytes, "reason", rep.Reason)
		return rep, nil
	}
	rep.Next = max(next, lw)
	return rep, nil
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
