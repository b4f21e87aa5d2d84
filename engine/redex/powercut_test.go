package redex

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// cutSegmentAfterFrames shortens a segment file to its header plus its
// first n frames, as a power cut does to frames that were never fsynced.
func cutSegmentAfterFrames(t *testing.T, path string, n int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, frames, _, _ := decodeSegment(b, DefaultMaxPayload, false)
	if len(frames) < n {
		t.Fatalf("setup: %s holds %d frames, cannot keep %d", path, len(frames), n)
	}
	off := segHeaderSize
	for _, f := range frames[:n] {
		off += frameHeaderSize + len(f.payload)
	}
	if err := os.Truncate(path, int64(off)); err != nil {
		t.Fatal(err)
	}
}

// The FIRST file is fsynced when retention advances it, the active segment
// need not be (FsyncNever, Interval, EveryN(n>1)). After a power cut the
// segment can end below the FIRST mark. Appends made after that restart,
// and explicitly synced, must survive the next restart: the log must not
// continue the old segment with a seq gap that the next recovery cuts as a
// torn tail (or, once the segment rolled, reports as corruption).
func TestDiskPowerCutBelowFirstMarkKeepsLaterSyncedAppends(t *testing.T) {
	// Ten 44-byte frames fill a 460-byte segment; after the cut, 6 more
	// appends roll it, as 12 do after the fix (which starts a new segment).
	for _, after := range []int{3, 12} {
		t.Run(fmt.Sprintf("appends-after-cut=%d", after), func(t *testing.T) {
			dir := t.TempDir()
			o := Options{Dir: dir, SegmentBytes: 460, Retention: Retention{MaxEvents: 2}, Logger: discardLogger()}
			l := openDiskT(t, o)
			for i := range 10 {
				if _, err := l.Append(payloadFor(i)); err != nil {
					t.Fatal(err)
				}
			}
			if res, err := l.Sweep(time.Now()); err != nil || res.FirstSeq != 8 {
				t.Fatalf("Sweep = %+v, %v; want first 8", res, err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			// Power cut: only the first frames of the active segment
			// reached the disk, all of them below the FIRST mark.
			segs := segments(t, dir)
			if len(segs) != 1 {
				t.Fatalf("setup: %d segments, want 1", len(segs))
			}
			cutSegmentAfterFrames(t, segs[0], 5)

			l = openDiskT(t, o)
			if l.FirstSeq() != 8 || l.NextSeq() != 8 || l.Len() != 0 {
				t.Fatalf("after power cut: first %d next %d len %d; want empty at 8", l.FirstSeq(), l.NextSeq(), l.Len())
			}
			end := 8 + after
			for i := 8; i < end; i++ {
				if seq, err := l.Append(payloadFor(i)); err != nil || seq != uint64(i) {
					t.Fatalf("append after power cut = %d, %v; want %d", seq, err, i)
				}
			}
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}

			l, err := Open(o)
			if err != nil {
				t.Fatalf("reopen after synced appends: %v", err)
			}
			defer l.Close()
			if after == 12 && len(segments(t, dir)) < 2 {
				t.Fatal("setup: the appends after the cut did not roll the segment")
			}
			if l.FirstSeq() != 8 || l.NextSeq() != uint64(end) {
				t.Fatalf("reopened: first %d next %d; want 8 %d (synced appends lost)", l.FirstSeq(), l.NextSeq(), end)
			}
			es, err := l.Read(8, 100)
			if err != nil || len(es) != after {
				t.Fatalf("Read(8) = %d entries, %v", len(es), err)
			}
			for i, e := range es {
				if string(e.Payload) != string(payloadFor(8+i)) {
					t.Fatalf("seq %d = %q", e.Seq, e.Payload)
				}
			}
		})
	}
}

// A sweep writes the FIRST mark before it deletes the segments below it,
// and recovery from a power cut starts a new segment before it deletes the
// old ones; a crash in between leaves segments that hold only dropped
// entries. Open must neither read them (they may be damaged: nothing in them
// matters) nor keep them.
func TestDiskStaleSegmentsBelowFirstMarkAreSkippedAndDeleted(t *testing.T) {
	dir := t.TempDir()
	o := Options{Dir: dir, SegmentBytes: 200, Retention: Retention{MaxEvents: 2}}
	l := openDiskT(t, o)
	for i := range 10 {
		mustAppend(t, l, string(payloadFor(i)))
	}
	segs := segments(t, dir)
	oldest, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Sweep(time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(segs[0]); !os.IsNotExist(err) {
		t.Fatalf("setup: sweep kept %s", segs[0])
	}
	// The crash left the oldest segment behind, damaged to boot.
	oldest[len(oldest)-1] ^= 0xff
	if err := os.WriteFile(segs[0], oldest, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err = Open(o)
	if err != nil {
		t.Fatalf("Open with a stale segment below the FIRST mark: %v", err)
	}
	defer l.Close()
	if l.FirstSeq() != 8 || l.NextSeq() != 10 {
		t.Fatalf("first %d next %d; want 8 10", l.FirstSeq(), l.NextSeq())
	}
	if _, err := os.Stat(segs[0]); !os.IsNotExist(err) {
		t.Fatalf("stale segment %s kept after Open: %v", segs[0], err)
	}
}
