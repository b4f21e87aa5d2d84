package redex

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestTruncateFromDropsTheSuffixAndKeepsHeldPayloads(t *testing.T) {
	replicaModes(t, func(t *testing.T, open func(o Options) *Log) {
		clk := &fakeClock{now: 100}
		l := open(Options{Clock: clk.Now})
		for i := range 10 {
			clk.Set(int64(100 + i))
			var err error
			if i%4 == 3 {
				_, err = l.AppendInline([8]byte{byte(i)})
			} else {
				_, err = l.Append(payloadFor(i))
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		held, _ := l.Get(8)
		heldCopy := bytes.Clone(held.Payload)
		ref := openMem(t, Options{Clock: clk.Now})
		src, _ := l.Read(0, 6)
		if err := ref.AppendReplicatedBatch(src); err != nil {
			t.Fatal(err)
		}

		if err := l.TruncateFrom(6); err != nil {
			t.Fatal(err)
		}
		if l.NextSeq() != 6 || l.Len() != 6 || l.Bytes() != ref.Bytes() {
			t.Fatalf("after truncate: next %d len %d bytes %d; want 6 6 %d", l.NextSeq(), l.Len(), l.Bytes(), ref.Bytes())
		}
		if _, err := l.Get(6); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(6) after truncate: %v, want ErrNotFound", err)
		}
		// The new history may be stamped earlier than the dropped suffix.
		if err := l.AppendReplicated(Entry{Seq: 6, Time: 105, Payload: []byte("new six, longer than before")}); err != nil {
			t.Fatalf("replicate after truncate: %v", err)
		}
		for i := 7; i < 12; i++ {
			if _, err := l.Append(bytes.Repeat([]byte{'x'}, 20)); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(held.Payload, heldCopy) {
			t.Fatalf("a payload handed out before the truncate changed: %q, was %q", held.Payload, heldCopy)
		}
		got, _ := l.Read(0, 6)
		assertSameEntries(t, got, src)
		e, _ := l.Get(6)
		if string(e.Payload) != "new six, longer than before" || e.Time != 105 || l.NextSeq() != 12 {
			t.Fatalf("seq 6 is %q at %d, next %d", e.Payload, e.Time, l.NextSeq())
		}
	})
}

func TestTruncateFromBoundaries(t *testing.T) {
	replicaModes(t, func(t *testing.T, open func(o Options) *Log) {
		l := open(Options{Retention: Retention{MaxEvents: 5}})
		for i := range 10 {
			mustAppend(t, l, string(payloadFor(i)))
		}
		if _, err := l.Sweep(time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := l.TruncateFrom(4); !errors.Is(err, ErrPruned) {
			t.Fatalf("truncate below first: %v, want ErrPruned", err)
		}
		for _, seq := range []uint64{10, 11, 1 << 40} {
			if err := l.TruncateFrom(seq); err != nil || l.NextSeq() != 10 {
				t.Fatalf("truncate from %d (>= next): err %v, next %d; want a no-op", seq, err, l.NextSeq())
			}
		}
		// Cutting everything retained leaves an empty log at FirstSeq.
		if err := l.TruncateFrom(5); err != nil {
			t.Fatal(err)
		}
		if l.FirstSeq() != 5 || l.NextSeq() != 5 || l.Len() != 0 || l.Bytes() != 0 {
			t.Fatalf("after truncating all: first %d next %d len %d bytes %d", l.FirstSeq(), l.NextSeq(), l.Len(), l.Bytes())
		}
		if seq := mustAppend(t, l, "again"); seq != 5 {
			t.Fatalf("append after truncating all got seq %d, want 5", seq)
		}
	})
}

func TestTruncateFromEndsTailsWithErrTruncated(t *testing.T) {
	l := openMem(t, Options{})
	for i := range 5 {
		mustAppend(t, l, string(payloadFor(i)))
	}
	backfill, _ := l.Tail(0)
	live, _ := l.Tail(Live)
	if err := l.TruncateFrom(2); err != nil {
		t.Fatal(err)
	}
	for name, tl := range map[string]*Tail{"backfill": backfill, "live": live} {
		for range tl.C() {
		}
		if !errors.Is(tl.Err(), ErrTruncated) {
			t.Fatalf("%s tail ended with %v, want ErrTruncated", name, tl.Err())
		}
	}
}

func TestDiskTruncateFromAcrossSegmentsSurvivesReopen(t *testing.T) {
	for _, cut := range []uint64{0, 3, 17, 40, 49} {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			dir := t.TempDir()
			o := Options{Dir: dir, SegmentBytes: 200}
			l := openDiskT(t, o)
			for i := range 50 {
				mustAppend(t, l, string(payloadFor(i)))
			}
			before := len(segments(t, dir))
			if before < 5 {
				t.Fatalf("only %d segments; the test needs several", before)
			}
			if err := l.TruncateFrom(cut); err != nil {
				t.Fatal(err)
			}
			for i := int(cut); i < int(cut)+5; i++ {
				if seq := mustAppend(t, l, fmt.Sprintf("new-%d", i)); seq != uint64(i) {
					t.Fatalf("append after truncate got seq %d, want %d", seq, i)
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = openDiskT(t, o)
			defer l.Close()
			if l.FirstSeq() != 0 || l.NextSeq() != cut+5 {
				t.Fatalf("reopened: first %d next %d; want 0 %d", l.FirstSeq(), l.NextSeq(), cut+5)
			}
			es, _ := l.Read(0, 100)
			for i, e := range es {
				want := string(payloadFor(i))
				if uint64(i) >= cut {
					want = fmt.Sprintf("new-%d", i)
				}
				if string(e.Payload) != want {
					t.Fatalf("seq %d is %q, want %q", i, e.Payload, want)
				}
			}
		})
	}
}
