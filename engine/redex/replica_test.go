package redex

import (
	"bytes"
	"errors"
	"testing"
)

// replicaModes runs a test against a memory log and a disk log.
func replicaModes(t *testing.T, fn func(t *testing.T, open func(o Options) *Log)) {
	t.Run("memory", func(t *testing.T) {
		fn(t, func(o Options) *Log { return openMem(t, o) })
	})
	t.Run("disk", func(t *testing.T) {
		dir := t.TempDir()
		fn(t, func(o Options) *Log {
			o.Dir = dir
			l := openDiskT(t, o)
			t.Cleanup(func() { _ = l.Close() })
			return l
		})
	})
}

func TestFirstSeqStartsANewLogThere(t *testing.T) {
	replicaModes(t, func(t *testing.T, open func(o Options) *Log) {
		l := open(Options{FirstSeq: 100})
		if l.NextSeq() != 100 || l.FirstSeq() != 100 || l.Len() != 0 {
			t.Fatalf("new log: first %d next %d len %d; want 100 100 0", l.FirstSeq(), l.NextSeq(), l.Len())
		}
		if seq := mustAppend(t, l, "a"); seq != 100 {
			t.Fatalf("first append got seq %d, want 100", seq)
		}
		if _, err := l.Get(99); !errors.Is(err, ErrPruned) {
			t.Fatalf("Get below FirstSeq: %v, want ErrPruned", err)
		}
	})
}

func TestDiskFirstSeqAppliesOnlyToADirectoryWithoutALog(t *testing.T) {
	dir := t.TempDir()
	l := openDiskT(t, Options{Dir: dir, FirstSeq: 100})
	for i := range 3 {
		mustAppend(t, l, string(payloadFor(i)))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, fs := range []uint64{0, 100, 500} {
		l = openDiskT(t, Options{Dir: dir, FirstSeq: fs})
		if l.FirstSeq() != 100 || l.NextSeq() != 103 {
			t.Fatalf("reopen with FirstSeq %d: first %d next %d; want what is on disk (100, 103)", fs, l.FirstSeq(), l.NextSeq())
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// A log created empty at seq 7 reopens empty at 7, whatever FirstSeq says.
	dir2 := t.TempDir()
	l = openDiskT(t, Options{Dir: dir2, FirstSeq: 7})
	_ = l.Close()
	l = openDiskT(t, Options{Dir: dir2, FirstSeq: 0})
	defer l.Close()
	if l.NextSeq() != 7 || l.FirstSeq() != 7 {
		t.Fatalf("empty log reopened: first %d next %d; want 7 7", l.FirstSeq(), l.NextSeq())
	}
}

func TestAppendReplicatedKeepsOwnerSeqTimeAndFlags(t *testing.T) {
	clk := &fakeClock{now: 1000}
	owner := openMem(t, Options{Clock: clk.Now})
	for i := range 10 {
		clk.Set(int64(1000 + i*7))
		var err error
		switch i % 3 {
		case 0:
			_, err = owner.Append(payloadFor(i))
		case 1:
			_, err = owner.AppendWithFlags(payloadFor(i), FlagTombstone)
		default:
			_, err = owner.AppendInline([8]byte{byte(i)})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	src, _ := owner.Read(0, 100)

	replicaModes(t, func(t *testing.T, open func(o Options) *Log) {
		// The follower's clock is far behind: replicated stamps must not
		// come from it.
		f := open(Options{Clock: func() int64 { return 1 }})
		for _, e := range src[:4] {
			if err := f.AppendReplicated(e); err != nil {
				t.Fatalf("AppendReplicated(%d): %v", e.Seq, err)
			}
		}
		if err := f.AppendReplicatedBatch(src[4:]); err != nil {
			t.Fatalf("AppendReplicatedBatch: %v", err)
		}
		got, err := f.Read(0, 100)
		if err != nil {
			t.Fatal(err)
		}
		assertSameEntries(t, got, src)
		// A local append after promotion is never stamped before the
		// replicated history.
		seq, err := f.Append([]byte("after"))
		if err != nil {
			t.Fatal(err)
		}
		e, _ := f.Get(seq)
		if seq != 10 || e.Time < src[9].Time {
			t.Fatalf("local append after replicas: seq %d time %d; want 10 and >= %d", seq, e.Time, src[9].Time)
		}
	})
}

func TestDiskReplicatedEntriesSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	f := openDiskT(t, Options{Dir: dir, FirstSeq: 5})
	src := []Entry{
		{Seq: 5, Time: 10, Payload: []byte("five")},
		{Seq: 6, Time: 10, Flags: FlagTombstone, Payload: []byte("six")},
		{Seq: 7, Time: 12, Flags: FlagInline, Payload: []byte("8bytes!!")},
		{Seq: 8, Time: 13},
	}
	if err := f.AppendReplicatedBatch(src); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = openDiskT(t, Options{Dir: dir})
	defer f.Close()
	got, err := f.Read(5, 10)
	if err != nil {
		t.Fatal(err)
	}
	assertSameEntries(t, got, src)
	if f.NextSeq() != 9 {
		t.Fatalf("NextSeq after reopen %d, want 9", f.NextSeq())
	}
}

func TestAppendReplicatedRefusesGapAndDuplicateWithSeqGapError(t *testing.T) {
	replicaModes(t, func(t *testing.T, open func(o Options) *Log) {
		f := open(Options{})
		if err := f.AppendReplicated(Entry{Seq: 0, Time: 1, Payload: []byte("a")}); err != nil {
			t.Fatal(err)
		}
		for _, seq := range []uint64{0, 2, 1 << 40} {
			err := f.AppendReplicated(Entry{Seq: seq, Time: 2, Payload: []byte("x")})
			var gap *SeqGapError
			if !errors.As(err, &gap) || gap.Got != seq || gap.Want != 1 {
				t.Fatalf("seq %d: err %v, want *SeqGapError{Got: %d, Want: 1}", seq, err, seq)
			}
		}
		if f.NextSeq() != 1 || f.Len() != 1 {
			t.Fatalf("after refusals: next %d len %d; want 1 1", f.NextSeq(), f.Len())
		}
	})
}

func TestAppendReplicatedBatchIsAllOrNothing(t *testing.T) {
	replicaModes(t, func(t *testing.T, open func(o Options) *Log) {
		f := open(Options{MaxPayload: 16})
		bad := [][]Entry{
			{{Seq: 0, Time: 1}, {Seq: 1, Time: 1}, {Seq: 3, Time: 1}},                           // gap in the middle
			{{Seq: 0, Time: 5}, {Seq: 1, Time: 4}},                                              // time goes back
			{{Seq: 0, Time: 1}, {Seq: 1, Time: 1, Payload: make([]byte, 17)}},                   // oversize
			{{Seq: 0, Time: 1}, {Seq: 1, Time: 1, Flags: FlagInline, Payload: []byte("short")}}, // bad inline
		}
		wantErr := []func(error) bool{
			func(err error) bool { var g *SeqGapError; return errors.As(err, &g) && g.Got == 3 && g.Want == 2 },
			func(err error) bool { return errors.Is(err, ErrTimeRegression) },
			func(err error) bool { var p *PayloadTooLargeError; return errors.As(err, &p) },
			func(err error) bool { return errors.Is(err, ErrInlineOnHeap) },
		}
		for i, batch := range bad {
			if err := f.AppendReplicatedBatch(batch); !wantErr[i](err) {
				t.Fatalf("batch %d: unexpected err %v", i, err)
			}
			if f.NextSeq() != 0 || f.Len() != 0 {
				t.Fatalf("batch %d: a refused batch appended something (next %d)", i, f.NextSeq())
			}
		}
	})
}

func TestAppendReplicatedRefusesInlineOnHeapOnlyLog(t *testing.T) {
	f := openMem(t, Options{HeapOnly: true})
	err := f.AppendReplicated(Entry{Seq: 0, Flags: FlagInline, Payload: []byte("8bytes!!")})
	if !errors.Is(err, ErrInlineOnHeap) {
		t.Fatalf("err %v, want ErrInlineOnHeap", err)
	}
}

func TestAppendReplicatedDeliversToTails(t *testing.T) {
	f := openMem(t, Options{})
	tl, err := f.Tail(0)
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	src := []Entry{{Seq: 0, Time: 3, Payload: []byte("a")}, {Seq: 1, Time: 4, Payload: []byte("b")}}
	if err := f.AppendReplicatedBatch(src); err != nil {
		t.Fatal(err)
	}
	for _, want := range src {
		got, err := next(t, tl)
		if err != nil {
			t.Fatal(err)
		}
		assertSameEntries(t, []Entry{got}, []Entry{want})
	}
}

func TestAppendReplicatedOnClosedLog(t *testing.T) {
	f, err := Open(Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	if err := f.AppendReplicated(Entry{Seq: 0}); !errors.Is(err, ErrClosed) {
		t.Fatalf("err %v, want ErrClosed", err)
	}
}

func assertSameEntries(t *testing.T, got, want []Entry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Seq != w.Seq || g.Time != w.Time || g.Flags != w.Flags || !bytes.Equal(g.Payload, w.Payload) {
			t.Fatalf("entry %d: got {seq %d time %d flags %x %q}, want {seq %d time %d flags %x %q}",
				i, g.Seq, g.Time, g.Flags, g.Payload, w.Seq, w.Time, w.Flags, w.Payload)
		}
	}
}
