package redex

import (
	"errors"
	"math"
	"testing"
	"time"
)

// Seq math.MaxUint64 is Live, so the last seq a log can assign is
// MaxUint64-1 and NextSeq stops at MaxUint64. An append past that is
// refused with ErrSeqExhausted; it must not wrap NextSeq to 0 (which made
// the next append index outside the log and panic with the state lock held).
func TestSeqSpaceExhaustedIsRefusedNotWrapped(t *testing.T) {
	const top = math.MaxUint64
	replicaModes(t, func(t *testing.T, open func(o Options) *Log) {
		l := open(Options{FirstSeq: top - 3})
		if seq := mustAppend(t, l, "a"); seq != top-3 {
			t.Fatalf("first append got %d", seq)
		}
		if seq, err := l.AppendInline([8]byte{1}); err != nil || seq != top-2 {
			t.Fatalf("AppendInline = %d, %v", seq, err)
		}
		// A batch that would need seq MaxUint64 is refused whole.
		if _, ok, err := l.AppendBatch([][]byte{{1}, {2}}); !errors.Is(err, ErrSeqExhausted) || ok {
			t.Fatalf("AppendBatch crossing the top: ok=%v err=%v, want ErrSeqExhausted", ok, err)
		}
		if first, ok, err := l.AppendBatch([][]byte{{1}}); err != nil || !ok || first != top-1 {
			t.Fatalf("AppendBatch of the last seq = %d, %v, %v", first, ok, err)
		}
		if l.NextSeq() != top {
			t.Fatalf("NextSeq = %d, want MaxUint64", l.NextSeq())
		}
		for name, appendOne := range map[string]func() error{
			"Append":       func() error { _, err := l.Append([]byte("x")); return err },
			"AppendInline": func() error { _, err := l.AppendInline([8]byte{}); return err },
			"AppendBatch":  func() error { _, _, err := l.AppendBatch([][]byte{{1}}); return err },
			"AppendReplicated": func() error {
				return l.AppendReplicated(Entry{Seq: top, Time: time.Now().UnixNano()})
			},
		} {
			if err := appendOne(); !errors.Is(err, ErrSeqExhausted) {
				t.Fatalf("%s on an exhausted log: %v, want ErrSeqExhausted", name, err)
			}
		}
		if l.NextSeq() != top || l.Len() != 3 {
			t.Fatalf("after refusals: next %d len %d; want MaxUint64, 3", l.NextSeq(), l.Len())
		}
		// Still a working log: reads, retention and tails.
		if e, err := l.Get(top - 1); err != nil || e.Seq != top-1 {
			t.Fatalf("Get(MaxUint64-1) = %+v, %v", e, err)
		}
		tl, err := l.Tail(top - 1)
		if err != nil {
			t.Fatal(err)
		}
		if e, err := next(t, tl); err != nil || e.Seq != top-1 {
			t.Fatalf("tail from MaxUint64-1: %+v, %v", e, err)
		}
		tl.Close()
	})
}

// Retention near the top of the seq space: the index chunk holding the
// last seqs must not be freed while entries in it are retained.
func TestRetentionAtTopOfSeqSpaceKeepsRetainedEntries(t *testing.T) {
	const top = math.MaxUint64
	replicaModes(t, func(t *testing.T, open func(o Options) *Log) {
		l := open(Options{FirstSeq: top - 4, Retention: Retention{MaxEvents: 1}})
		for range 4 {
			mustAppend(t, l, "x")
		}
		if res, err := l.Sweep(time.Now()); err != nil || res.FirstSeq != top-1 {
			t.Fatalf("Sweep = %+v, %v; want first MaxUint64-1", res, err)
		}
		if e, err := l.Get(top - 1); err != nil || string(e.Payload) != "x" {
			t.Fatalf("Get(MaxUint64-1) after sweep = %+v, %v", e, err)
		}
	})
}

func TestFirstSeqThatLeavesNoSeqIsRefused(t *testing.T) {
	for _, dir := range []string{"", t.TempDir()} {
		if l, err := Open(Options{Dir: dir, FirstSeq: math.MaxUint64}); !errors.Is(err, ErrSeqExhausted) {
			if l != nil {
				l.Close()
			}
			t.Fatalf("Open(dir %q, FirstSeq MaxUint64): %v, want ErrSeqExhausted", dir, err)
		}
	}
}

func TestAppendReplicatedRefusesTheLastSeqWithErrSeqExhausted(t *testing.T) {
	const top = math.MaxUint64
	replicaModes(t, func(t *testing.T, open func(o Options) *Log) {
		l := open(Options{FirstSeq: top - 1})
		// A batch reaching seq MaxUint64 is refused whole.
		err := l.AppendReplicatedBatch([]Entry{{Seq: top - 1, Time: 1}, {Seq: top, Time: 1}})
		if !errors.Is(err, ErrSeqExhausted) || l.NextSeq() != top-1 {
			t.Fatalf("batch up to seq MaxUint64: %v (next %d), want ErrSeqExhausted and nothing appended", err, l.NextSeq())
		}
		if err := l.AppendReplicated(Entry{Seq: top - 1, Time: 1}); err != nil {
			t.Fatal(err)
		}
		if err := l.AppendReplicated(Entry{Seq: top, Time: 1}); !errors.Is(err, ErrSeqExhausted) {
			t.Fatalf("replicated seq MaxUint64: %v, want ErrSeqExhausted", err)
		}
	})
}
