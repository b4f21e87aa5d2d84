package cortex

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"runtime"
	"testing"

	"github.com/purplerain/mesh-operator/engine/redex"
)

func TestSnapshotNextSeqSaturatesAtMaxUint64(t *testing.T) {
	for _, tc := range []struct {
		snap Snapshot
		want uint64
	}{
		{Snapshot{}, 0},
		{Snapshot{Through: 41, Folded: true}, 42},
		{Snapshot{Through: math.MaxUint64 - 1, Folded: true}, math.MaxUint64},
		{Snapshot{Through: math.MaxUint64, Folded: true}, math.MaxUint64},
	} {
		if got := tc.snap.NextSeq(); got != tc.want {
			t.Errorf("%+v.NextSeq() = %d, want %d", tc.snap, got, tc.want)
		}
	}
}

// The fold position saturates: folding the entry with seq MaxUint64 must not
// wrap NextSeq to 0 (which would read as "nothing folded" and refold the log).
// redex cannot serve that seq yet, so this drives apply directly on a driver
// that runs no goroutine.
func TestFoldNextSeqSaturatesAtMaxUint64(t *testing.T) {
	d := newDriver(nil, sumState{}, foldSum, Options[sumState]{Encode: encodeSum, Logger: slog.New(slog.DiscardHandler)})
	d.next = math.MaxUint64 - 1
	d.nextAtomic.Store(d.next)
	d.running.Store(true)

	waited := make(chan error, 1)
	go func() { waited <- d.WaitForSeq(context.Background(), math.MaxUint64) }()
	for registered := false; !registered; {
		d.waitMu.Lock()
		registered = len(d.waiters) == 1
		d.waitMu.Unlock()
		runtime.Gosched()
	}

	for _, e := range []redex.Entry{{Seq: math.MaxUint64 - 1, Payload: []byte("1")}, {Seq: math.MaxUint64, Payload: []byte("2")}} {
		if !d.apply(e) {
			t.Fatalf("apply(%d) halted: %v", e.Seq, d.Err())
		}
	}
	if got := d.NextSeq(); got != math.MaxUint64 {
		t.Fatalf("NextSeq after folding seq MaxUint64 = %d, want it saturated at MaxUint64", got)
	}
	if err := <-waited; err != nil {
		t.Fatalf("WaitForSeq(MaxUint64) = %v, want released once that seq folded", err)
	}
	if err := d.WaitForSeq(context.Background(), math.MaxUint64); err != nil {
		t.Fatalf("WaitForSeq(MaxUint64) after the fold = %v", err)
	}
	snap, err := d.Snapshot()
	if err != nil || !snap.Folded || snap.Through != math.MaxUint64 || snap.NextSeq() != math.MaxUint64 {
		t.Fatalf("Snapshot = %+v, %v; want folded through MaxUint64", snap, err)
	}

	// An entry after the last possible seq (a wrapped log) halts the driver
	// instead of being folded.
	if d.apply(redex.Entry{Seq: 0, Payload: []byte("4")}) {
		t.Fatal("an entry after seq MaxUint64 was folded")
	}
	if d.IsRunning() || !errors.Is(d.Err(), ErrHalted) {
		t.Fatalf("running=%v err=%v, want halted", d.IsRunning(), d.Err())
	}
	if s := state(d); s.Sum != 3 {
		t.Fatalf("sum %d, want 3 (the entry after MaxUint64 must not fold)", s.Sum)
	}
}

func TestOpenFromSnapshotThroughMaxUint64FoldsNothingMore(t *testing.T) {
	l := openLog(t, redex.Options{})
	enc, _ := encodeSum(&sumState{Sum: 5})
	d, err := OpenFromSnapshot(l, Snapshot{State: enc, Through: math.MaxUint64, Folded: true}, decodeSum, foldSum,
		Options[sumState]{Encode: encodeSum, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.NextSeq() != math.MaxUint64 {
		t.Fatalf("restored NextSeq = %d, want MaxUint64", d.NextSeq())
	}
	if snap, _ := d.Snapshot(); snap.Through != math.MaxUint64 || !snap.Folded {
		t.Fatalf("re-snapshot = %+v, want through MaxUint64", snap)
	}
	ch := d.Changes()
	appendAll(t, l, "7")
	if _, err := ch.Next(ctx10s(t)); !errors.Is(err, ErrHalted) {
		t.Fatalf("change stream after an entry past MaxUint64: %v, want ErrHalted", err)
	}
	if s := state(d); s.Sum != 5 {
		t.Fatalf("sum %d, want 5 (nothing folds after a snapshot through MaxUint64)", s.Sum)
	}
}

// A WaitForSeq that gives up unregisters its waiter, so callers timing out
// against a stalled log do not accumulate waiters.
func TestWaitForSeqCancelledWaitersAreUnregistered(t *testing.T) {
	l := openLog(t, redex.Options{})
	d := startSum(t, l, Options[sumState]{Start: FromBeginning()})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := 0; i < 100; i++ {
		if err := d.WaitForSeq(ctx, 10); !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitForSeq with a cancelled context = %v", err)
		}
	}
	d.waitMu.Lock()
	n := len(d.waiters)
	d.waitMu.Unlock()
	if n != 0 {
		t.Fatalf("%d abandoned waiters still registered", n)
	}
	appendAll(t, l, "1", "2")
	if err := d.WaitForSeq(ctx10s(t), 1); err != nil {
		t.Fatalf("a live waiter after the abandoned ones: %v", err)
	}
}
