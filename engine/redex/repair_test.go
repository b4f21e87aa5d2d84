package redex

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"
)

// frameOffset is the byte offset of the i-th frame of a segment whose
// frames all carry payloads of size n.
func frameOffset(i, n int) int { return segHeaderSize + i*(frameHeaderSize+n) }

// checkKept reopens dir and checks it holds exactly payloads [0, n) of
// payloadFor at seqs 0..n-1, then that an append continues at n.
func checkKept(t *testing.T, o Options, n int) {
	t.Helper()
	l := openDiskT(t, o)
	defer l.Close()
	if l.FirstSeq() != 0 || l.NextSeq() != uint64(n) {
		t.Fatalf("repaired log holds [%d, %d), want [0, %d)", l.FirstSeq(), l.NextSeq(), n)
	}
	es, err := l.Read(0, n+1)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range es {
		if e.Seq != uint64(i) || !bytes.Equal(e.Payload, payloadFor(i)) {
			t.Fatalf("entry %d: seq %d payload %q, want %q", i, e.Seq, e.Payload, payloadFor(i))
		}
	}
	if seq := mustAppend(t, l, "after-repair"); seq != uint64(n) {
		t.Fatalf("append after repair got seq %d, want %d", seq, n)
	}
}

func writeEntries(t *testing.T, o Options, n int) {
	t.Helper()
	l := openDiskT(t, o)
	for i := range n {
		mustAppend(t, l, string(payloadFor(i)))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func flipByte(t *testing.T, path string, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x10
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRepairCutsMidSegmentCorruptionAndKeepsEverythingBefore(t *testing.T) {
	dir := t.TempDir()
	o := Options{Dir: dir, Logger: discardLogger()}
	writeEntries(t, o, 10)
	seg := segments(t, dir)[0]
	size := len(payloadFor(0))
	before, _ := os.Stat(seg)
	// A payload byte of frame 4: frames 5..9 after it are intact, so Open
	// refuses (this is not a torn write) and names the repair.
	flipByte(t, seg, frameOffset(4, size)+frameHeaderSize+3)
	_, err := Open(o)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "redex.Repair") {
		t.Fatalf("Open of a corrupt log: %v, want ErrCorrupt naming redex.Repair", err)
	}

	rep, err := Repair(o)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Cut || rep.Segment != seg || rep.Next != 4 || rep.Offset != int64(frameOffset(4, size)) {
		t.Fatalf("report %+v, want a cut at seq 4, offset %d of %s", rep, frameOffset(4, size), seg)
	}
	if rep.DroppedFrames != 5 || rep.DroppedSegments != 0 || rep.DroppedBytes != before.Size()-int64(frameOffset(4, size)) {
		t.Fatalf("report %+v, want 5 intact frames and %d bytes dropped", rep, before.Size()-int64(frameOffset(4, size)))
	}
	checkKept(t, o, 4)

	// Repairing a sound log changes nothing.
	after, _ := os.ReadFile(seg)
	rep, err = Repair(o)
	if err != nil || rep.Cut || rep.Next != 5 {
		t.Fatalf("repair of a sound log: %+v, %v; want no cut, next 5", rep, err)
	}
	if again, _ := os.ReadFile(seg); !bytes.Equal(again, after) {
		t.Fatal("repair of a sound log changed the segment")
	}
}

func TestRepairCutsCorruptionInALaterSegmentAndDropsTheSegmentsAfterIt(t *testing.T) {
	dir := t.TempDir()
	size := len(payloadFor(0))
	// Four frames per segment: 20 entries in five segments.
	o := Options{Dir: dir, SegmentBytes: int64(frameOffset(4, size)), Logger: discardLogger()}
	writeEntries(t, o, 20)
	segs := segments(t, dir)
	if len(segs) != 5 {
		t.Fatalf("setup: %d segments, want 5", len(segs))
	}
	var later int64
	for _, p := range segs[3:] {
		st, _ := os.Stat(p)
		later += st.Size()
	}
	seg2, _ := os.Stat(segs[2])
	// Frame 1 of the third segment (seq 9), in its header this time.
	flipByte(t, segs[2], frameOffset(1, size)+20)
	if _, err := Open(o); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with a corrupt middle segment: %v, want ErrCorrupt", err)
	}
	rep, err := Repair(o)
	if err != nil {
		t.Fatal(err)
	}
	wantBytes := seg2.Size() - int64(frameOffset(1, size)) + later
	if !rep.Cut || rep.Segment != segs[2] || rep.Next != 9 || rep.DroppedSegments != 2 ||
		rep.DroppedFrames != 2+8 || rep.DroppedBytes != wantBytes {
		t.Fatalf("report %+v, want cut at seq 9 in %s, 10 intact frames, 2 segments and %d bytes dropped", rep, segs[2], wantBytes)
	}
	if got := segments(t, dir); len(got) != 3 {
		t.Fatalf("segments after repair: %v, want the first three", got)
	}
	checkKept(t, o, 9)
	// The repaired log reopens again with the append made after the cut.
	l := openDiskT(t, o)
	defer l.Close()
	if e, err := l.Get(9); err != nil || string(e.Payload) != "after-repair" || l.NextSeq() != 10 {
		t.Fatalf("second reopen: seq 9 = %q (%v), next %d; want the post-repair append and next 10", e.Payload, err, l.NextSeq())
	}
}

func TestRepairDropsALaterSegmentWhoseHeaderIsBad(t *testing.T) {
	dir := t.TempDir()
	size := len(payloadFor(0))
	o := Options{Dir: dir, SegmentBytes: int64(frameOffset(4, size)), Logger: discardLogger()}
	writeEntries(t, o, 12)
	segs := segments(t, dir)
	flipByte(t, segs[1], 2) // the magic
	if _, err := Open(o); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open: %v, want ErrCorrupt", err)
	}
	rep, err := Repair(o)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Cut || rep.Next != 4 || rep.Offset != 0 || rep.DroppedSegments != 1 || rep.DroppedFrames != 8 {
		t.Fatalf("report %+v, want the bad segment and the next dropped whole (8 intact frames), next 4", rep)
	}
	checkKept(t, o, 4)
}

func TestRepairKeepsTheSeqCounterWhenTheFirstSegmentGoes(t *testing.T) {
	dir := t.TempDir()
	o := Options{Dir: dir, FirstSeq: 100, Logger: discardLogger()}
	l := openDiskT(t, o)
	for i := range 3 {
		mustAppend(t, l, string(payloadFor(i)))
	}
	l.Close()
	seg := segments(t, dir)[0]
	flipByte(t, seg, 9) // the base seq in the header: it no longer matches the name
	if _, err := Open(o); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open: %v, want ErrCorrupt", err)
	}
	rep, err := Repair(o)
	if err != nil || !rep.Cut || rep.Next != 100 {
		t.Fatalf("repair: %+v, %v; want the segment dropped and next 100", rep, err)
	}
	l = openDiskT(t, o)
	defer l.Close()
	if l.NextSeq() != 100 {
		t.Fatalf("reopened at next seq %d, want 100 (seqs never go back)", l.NextSeq())
	}
}

// TestRepairAfterAnySingleByteFlipKeepsAPrefix flips one byte at many
// offsets of a multi-segment log (headers, frame headers, payloads, every
// segment). Whatever Open says, Repair then leaves a log Open accepts,
// holding exactly payloads 0..k-1 at seqs 0..k-1, where k is the seq the
// report names and no later than the damaged frame.
func TestRepairAfterAnySingleByteFlipKeepsAPrefix(t *testing.T) {
	size := len(payloadFor(0))
	frame := frameHeaderSize + size
	o := Options{SegmentBytes: int64(frameOffset(4, size)), Logger: discardLogger()}
	const n = 14 // four segments: 4, 4, 4, 2 frames
	r := rand.New(rand.NewPCG(7, 11))
	for trial := range 60 {
		dir := t.TempDir()
		o.Dir = dir
		writeEntries(t, o, n)
		segs := segments(t, dir)
		si := r.IntN(len(segs))
		b, _ := os.ReadFile(segs[si])
		off := r.IntN(len(b))
		flipByte(t, segs[si], off)
		// The first seq whose frame the flip touched (a header flip
		// touches the segment's first frame at the latest).
		damaged := uint64(si*4) + uint64(max(off-segHeaderSize, 0)/frame)
		if l, err := Open(o); err == nil {
			l.Close()
		}
		rep, err := Repair(o)
		if err != nil {
			t.Fatalf("trial %d (segment %d offset %d): repair: %v", trial, si, off, err)
		}
		l, err := Open(o)
		if err != nil {
			t.Fatalf("trial %d (segment %d offset %d): open after repair: %v (report %+v)", trial, si, off, err, rep)
		}
		k := l.NextSeq()
		if rep.Cut && rep.Next != k {
			t.Fatalf("trial %d: report says next %d, reopened log next %d", trial, rep.Next, k)
		}
		if k > damaged {
			t.Fatalf("trial %d (segment %d offset %d): kept %d entries past the damaged seq %d", trial, si, off, k, damaged)
		}
		es, err := l.Read(0, n)
		if err != nil || uint64(len(es)) != k {
			t.Fatalf("trial %d: read %d entries (%v), want %d", trial, len(es), err, k)
		}
		for i, e := range es {
			if e.Seq != uint64(i) || !bytes.Equal(e.Payload, payloadFor(i)) {
				t.Fatalf("trial %d: entry %d is seq %d %q", trial, i, e.Seq, e.Payload)
			}
		}
		l.Close()
	}
}

// Retention moved the FIRST mark into the first segment (entries 0..9 are
// dropped, the file still holds them until the segment goes). A flipped
// byte among those dropped entries makes Open refuse the log, but every
// retained entry is intact: Repair must keep all of them instead of
// cutting at the dead entry, which left nothing at or above the mark.
func TestRepairOfDamageBelowTheFirstMarkKeepsTheRetainedEntries(t *testing.T) {
	dir := t.TempDir()
	size := len(payloadFor(0))
	o := Options{Dir: dir, SegmentBytes: int64(frameOffset(30, size)), Logger: discardLogger(), Retention: Retention{MaxEvents: 30}}
	l := openDiskT(t, o)
	for i := range 40 {
		mustAppend(t, l, string(payloadFor(i)))
	}
	if _, err := l.Sweep(time.Now()); err != nil {
		t.Fatal(err)
	}
	if l.FirstSeq() != 10 {
		t.Fatalf("first seq %d after the sweep, want 10", l.FirstSeq())
	}
	l.Close()
	segs := segments(t, dir)
	if len(segs) != 2 {
		t.Fatalf("segments %v, want the first (0..29, partly dropped) and the second", segs)
	}
	flipByte(t, segs[0], frameOffset(3, size)+frameHeaderSize+1) // entry 3: dropped by retention
	if _, err := Open(o); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open: %v, want ErrCorrupt", err)
	}
	// A crash after Repair wrote the segment at the mark and before it
	// removed the damaged one: Open takes the damaged one for stale.
	crashed := t.TempDir()
	for _, name := range []string{lowWaterName, segName(0), segName(30)} {
		b, err := os.ReadFile(dir + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(crashed+"/"+name, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if name == segName(0) {
			if _, err := writeSegment(crashed, 10, b[frameOffset(10, size):]); err != nil {
				t.Fatal(err)
			}
		}
	}
	co := o
	co.Dir = crashed
	cl := openDiskT(t, co)
	if cl.FirstSeq() != 10 || cl.NextSeq() != 40 {
		t.Fatalf("after a crash mid-repair the log holds [%d, %d), want [10, 40)", cl.FirstSeq(), cl.NextSeq())
	}
	cl.Close()

	rep, err := Repair(o)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Cut || rep.Next != 40 || rep.DroppedFrames != 0 || rep.DroppedSegments != 0 {
		t.Fatalf("report %+v: want the damage below the mark cut away, nothing retained dropped, next 40", rep)
	}
	l = openDiskT(t, o)
	defer l.Close()
	if l.FirstSeq() != 10 || l.NextSeq() != 40 {
		t.Fatalf("repaired log holds [%d, %d), want [10, 40)", l.FirstSeq(), l.NextSeq())
	}
	es, err := l.Read(10, 30)
	if err != nil || len(es) != 30 {
		t.Fatalf("read: %d entries, %v", len(es), err)
	}
	for _, e := range es {
		if !bytes.Equal(e.Payload, payloadFor(int(e.Seq))) {
			t.Fatalf("entry %d: %q", e.Seq, e.Payload)
		}
	}
	if seq := mustAppend(t, l, "after"); seq != 40 {
		t.Fatalf("append after repair got seq %d, want 40", seq)
	}
}

// Repair dropping a whole first segment that starts above the FIRST mark
// records the seq counter (the mark) before it deletes the segment: a
// Repair that stops in between (here the mark cannot be written) leaves a
// directory that still says where the seqs are, never one that reopens
// below seqs already handed out.
func TestRepairThatStopsBeforeTheMarkNeverLetsSeqsGoBack(t *testing.T) {
	dir := t.TempDir()
	created := Options{Dir: dir, FirstSeq: 100, Logger: discardLogger()}
	l := openDiskT(t, created)
	for i := range 3 {
		mustAppend(t, l, string(payloadFor(i)))
	}
	l.Close()
	flipByte(t, segments(t, dir)[0], 9) // header base no longer matches the name
	// A directory where the temporary mark file should go: writing the
	// mark fails, as a crash at that point would stop Repair.
	if err := os.MkdirAll(dir+"/"+lowWaterName+".tmp/x", 0o755); err != nil {
		t.Fatal(err)
	}
	o := Options{Dir: dir, Logger: discardLogger()} // the directory alone must say where the log is
	if _, err := Repair(o); err == nil {
		t.Fatal("Repair succeeded without writing its mark")
	}
	if err := os.RemoveAll(dir + "/" + lowWaterName + ".tmp"); err != nil {
		t.Fatal(err)
	}
	l, err := Open(o)
	if err == nil {
		defer l.Close()
		if l.NextSeq() < 103 && l.FirstSeq() < 100 {
			t.Fatalf("after an interrupted repair the log reopened at [%d, %d): seqs below 100 again", l.FirstSeq(), l.NextSeq())
		}
		return
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open after an interrupted repair: %v", err)
	}
	rep, err := Repair(o)
	if err != nil || rep.Next != 100 {
		t.Fatalf("repair again: %+v, %v; want next 100", rep, err)
	}
	l = openDiskT(t, o)
	defer l.Close()
	if l.NextSeq() != 100 {
		t.Fatalf("reopened at %d, want 100", l.NextSeq())
	}
}
