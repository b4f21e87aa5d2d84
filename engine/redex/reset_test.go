package redex

import (
	"errors"
	"testing"
)

func TestResetToRestartsAReplicaEmptyAtTheOwnersFirstSeq(t *testing.T) {
	for _, mode := range []string{"memory", "disk"} {
		t.Run(mode, func(t *testing.T) {
			o := Options{Logger: discardLogger(), SegmentBytes: 200}
			if mode == "disk" {
				o.Dir = t.TempDir()
			}
			l := openDiskT(t, o)
			for i := range 10 {
				mustAppend(t, l, string(payloadFor(i)))
			}
			old, _ := l.Get(3)
			tail, err := l.Tail(0)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.ResetTo(5); err == nil {
				t.Fatal("ResetTo below NextSeq succeeded")
			}
			if err := l.ResetTo(50); err != nil {
				t.Fatal(err)
			}
			for range tail.C() {
			}
			if !errors.Is(tail.Err(), ErrTruncated) {
				t.Fatalf("tail ended with %v, want ErrTruncated", tail.Err())
			}
			if string(old.Payload) != string(payloadFor(3)) {
				t.Fatalf("a payload handed out before the reset changed to %q", old.Payload)
			}
			if l.FirstSeq() != 50 || l.NextSeq() != 50 || l.Len() != 0 || l.Bytes() != 0 {
				t.Fatalf("after reset: [%d, %d) len %d bytes %d, want empty at 50", l.FirstSeq(), l.NextSeq(), l.Len(), l.Bytes())
			}
			if _, err := l.Read(9, 1); !errors.Is(err, ErrPruned) {
				t.Fatalf("read of a dropped seq: %v, want ErrPruned", err)
			}
			if err := l.AppendReplicated(Entry{Seq: 49, Time: 1, Payload: []byte("x")}); err == nil {
				t.Fatal("replicated seq 49 accepted after a reset to 50")
			}
			for i := range 8 { // several segments again
				if err := l.AppendReplicated(Entry{Seq: 50 + uint64(i), Time: 1, Payload: payloadFor(100 + i)}); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if mode == "memory" {
				return
			}
			l = openDiskT(t, o)
			defer l.Close()
			if l.FirstSeq() != 50 || l.NextSeq() != 58 {
				t.Fatalf("reopened at [%d, %d), want [50, 58)", l.FirstSeq(), l.NextSeq())
			}
			for i := range 8 {
				e, err := l.Get(50 + uint64(i))
				if err != nil || string(e.Payload) != string(payloadFor(100+i)) {
					t.Fatalf("seq %d after reopen: %q, %v", 50+i, e.Payload, err)
				}
			}
		})
	}
}

// A crash right after the FIRST mark was written (old segments still
// there) reopens as the reset log.
func TestResetInterruptedAfterTheFirstMarkReopensEmptyAtTheMark(t *testing.T) {
	dir := t.TempDir()
	o := Options{Dir: dir, SegmentBytes: 200, Logger: discardLogger()}
	l := openDiskT(t, o)
	for i := range 10 {
		mustAppend(t, l, string(payloadFor(i)))
	}
	l.Close()
	if err := writeLowWater(dir, 50); err != nil {
		t.Fatal(err)
	}
	l = openDiskT(t, o)
	defer l.Close()
	if l.FirstSeq() != 50 || l.NextSeq() != 50 {
		t.Fatalf("reopened at [%d, %d), want empty at 50", l.FirstSeq(), l.NextSeq())
	}
	if segs := segments(t, dir); len(segs) != 1 {
		t.Fatalf("segments %v, want only the new one", segs)
	}
}
