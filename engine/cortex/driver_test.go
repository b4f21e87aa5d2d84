package cortex

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/redex"
)

// sumState folds decimal payloads into a running sum and the seqs seen.
type sumState struct {
	Sum  int
	Seqs []uint64
}

var errBad = errors.New("bad payload")

func foldSum(s *sumState, e redex.Entry) error {
	n, err := strconv.Atoi(string(e.Payload))
	if err != nil {
		return fmt.Errorf("%w: %q", errBad, e.Payload)
	}
	s.Sum += n
	s.Seqs = append(s.Seqs, e.Seq)
	return nil
}

func encodeSum(s *sumState) ([]byte, error) {
	return binary.AppendVarint(nil, int64(s.Sum)), nil
}

func decodeSum(b []byte) (sumState, error) {
	v, n := binary.Varint(b)
	if n <= 0 {
		return sumState{}, errors.New("bad snapshot")
	}
	return sumState{Sum: int(v)}, nil
}

func openLog(t *testing.T, o redex.Options) *redex.Log {
	t.Helper()
	l, err := redex.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func appendAll(t *testing.T, l *redex.Log, payloads ...string) {
	t.Helper()
	for _, p := range payloads {
		if _, err := l.Append([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
}

func startSum(t *testing.T, l *redex.Log, o Options[sumState]) *Driver[sumState] {
	t.Helper()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	d, err := Start(l, sumState{}, foldSum, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func ctx10s(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func state(d *Driver[sumState]) sumState {
	var out sumState
	d.View(func(s *sumState) { out = sumState{Sum: s.Sum, Seqs: append([]uint64(nil), s.Seqs...)} })
	return out
}

func TestFromBeginningFoldsRetainedThenLive(t *testing.T) {
	l := openLog(t, redex.Options{})
	appendAll(t, l, "1", "2")
	d := startSum(t, l, Options[sumState]{Start: FromBeginning()})
	appendAll(t, l, "3")
	if err := d.WaitForSeq(ctx10s(t), 2); err != nil {
		t.Fatal(err)
	}
	if s := state(d); s.Sum != 6 || len(s.Seqs) != 3 {
		t.Fatalf("state %+v, want sum 6 over 3 entries", s)
	}
}

func TestLiveOnlyIgnoresEntriesBeforeStart(t *testing.T) {
	l := openLog(t, redex.Options{})
	appendAll(t, l, "100", "200")
	d := startSum(t, l, Options[sumState]{Start: LiveOnly()})
	if d.NextSeq() != 2 {
		t.Fatalf("LiveOnly starts at %d, want 2", d.NextSeq())
	}
	appendAll(t, l, "5")
	if err := d.WaitForSeq(ctx10s(t), 2); err != nil {
		t.Fatal(err)
	}
	if s := state(d); s.Sum != 5 {
		t.Fatalf("sum %d, want 5 (only the live entry)", s.Sum)
	}
}

func TestFromSeqStartsAtThatSeq(t *testing.T) {
	l := openLog(t, redex.Options{})
	appendAll(t, l, "1", "10", "100", "1000")
	d := startSum(t, l, Options[sumState]{Start: FromSeq(2)})
	if err := d.WaitForSeq(ctx10s(t), 3); err != nil {
		t.Fatal(err)
	}
	if s := state(d); s.Sum != 1100 || s.Seqs[0] != 2 {
		t.Fatalf("state %+v, want 1100 from seq 2", s)
	}
}

func TestFromBeginningHaltsWhenPrefixWasPruned(t *testing.T) {
	l := openLog(t, redex.Options{Retention: redex.Retention{MaxEvents: 1}})
	appendAll(t, l, "1", "2", "3")
	l.Sweep(time.Now())
	d := startSum(t, l, Options[sumState]{Start: FromBeginning()})
	err := d.WaitForSeq(ctx10s(t), 2)
	if !errors.Is(err, ErrHalted) || !errors.Is(err, redex.ErrPruned) {
		t.Fatalf("WaitForSeq = %v, want ErrHalted wrapping redex.ErrPruned", err)
	}
	if d.IsRunning() {
		t.Fatal("driver folding past a pruned gap is still running")
	}
}

// Release notes: "Cortex changes_tx broadcasts failing seq on
// Stop+non-recoverable halt" and test hygiene stop_policy_does_not_broadcast_failing_seq.
func TestStopPolicyDoesNotBroadcastFailingSeq(t *testing.T) {
	l := openLog(t, redex.Options{})
	d := startSum(t, l, Options[sumState]{Start: FromBeginning(), OnError: Stop})
	plain, lagged := d.Changes(), d.ChangesWithLag()
	appendAll(t, l, "1", "2", "3", "boom", "5", "6")
	for _, s := range []*ChangeStream{plain, lagged} {
		var got []uint64
		var err error
		for {
			var ev ChangeEvent
			ev, err = s.Next(ctx10s(t))
			if err != nil {
				break
			}
			got = append(got, ev.Seq)
		}
		if fmt.Sprint(got) != "[0 1 2]" {
			t.Fatalf("changes = %v, want [0 1 2] (failing seq 3 must not appear)", got)
		}
		var fe *FoldError
		if !errors.Is(err, ErrHalted) || !errors.As(err, &fe) || fe.Seq != 3 || !errors.Is(err, errBad) {
			t.Fatalf("stream ended with %v, want ErrHalted wrapping *FoldError{Seq: 3}", err)
		}
	}
	if d.IsRunning() {
		t.Fatal("IsRunning() is true after a Stop halt")
	}
	if s := state(d); s.Sum != 6 || len(s.Seqs) != 3 {
		t.Fatalf("state %+v: entries after the failing one were folded", s)
	}
	if d.NextSeq() != 3 {
		t.Fatalf("NextSeq = %d; the failing seq must not count as folded", d.NextSeq())
	}
}

// Release note: "Stop policy halts without final changes_tx notify":
// subscribers and waiters blocked at the time of the halt are released,
// and IsRunning is already false when they wake.
func TestStopPolicyHaltReleasesBlockedSubscribersAndWaiters(t *testing.T) {
	l := openLog(t, redex.Options{})
	d := startSum(t, l, Options[sumState]{Start: FromBeginning(), OnError: Stop})
	ch := d.Changes()
	var wg sync.WaitGroup
	results := make(chan string, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, err := ch.Next(ctx10s(t))
		results <- fmt.Sprintf("sub halted=%v running=%v", errors.Is(err, ErrHalted), d.IsRunning())
	}()
	go func() {
		defer wg.Done()
		err := d.WaitForSeq(ctx10s(t), 5)
		results <- fmt.Sprintf("wait halted=%v running=%v", errors.Is(err, ErrHalted), d.IsRunning())
	}()
	time.Sleep(10 * time.Millisecond) // let both block (correctness does not depend on it)
	appendAll(t, l, "nope")
	wg.Wait()
	close(results)
	for r := range results {
		if r != "sub halted=true running=false" && r != "wait halted=true running=false" {
			t.Fatal(r)
		}
	}
	if err := d.WaitForSeq(ctx10s(t), 0); !errors.Is(err, ErrHalted) {
		t.Fatalf("WaitForSeq after halt = %v", err)
	}
	if late := d.Changes(); late != nil {
		if _, err := late.Next(ctx10s(t)); !errors.Is(err, ErrHalted) {
			t.Fatalf("subscribing after halt: %v", err)
		}
	}
}

func TestLogAndContinueSkipsFailingSeq(t *testing.T) {
	l := openLog(t, redex.Options{})
	d := startSum(t, l, Options[sumState]{Start: FromBeginning(), OnError: LogAndContinue})
	ch := d.Changes()
	appendAll(t, l, "1", "2", "oops", "4", "5")
	if err := d.WaitForSeq(ctx10s(t), 4); err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for i := 0; i < 4; i++ {
		ev, err := ch.Next(ctx10s(t))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.Seq)
	}
	if fmt.Sprint(got) != "[0 1 3 4]" {
		t.Fatalf("changes %v, want [0 1 3 4]", got)
	}
	if !d.IsRunning() || d.FoldErrors() != 1 || state(d).Sum != 12 {
		t.Fatalf("running=%v errors=%d sum=%d", d.IsRunning(), d.FoldErrors(), state(d).Sum)
	}
}

func TestChangesWithLagReportsLaggedCount(t *testing.T) {
	l := openLog(t, redex.Options{})
	d := startSum(t, l, Options[sumState]{Start: FromBeginning(), ChangesBuffer: 4})
	withLag, plain := d.ChangesWithLag(), d.Changes()
	for i := 0; i < 10; i++ {
		appendAll(t, l, "1")
	}
	if err := d.WaitForSeq(ctx10s(t), 9); err != nil {
		t.Fatal(err)
	}
	ev, err := withLag.Next(ctx10s(t))
	if err != nil || ev.Lagged != 6 {
		t.Fatalf("first event %+v, %v; want Lagged(6)", ev, err)
	}
	for want := uint64(6); want < 10; want++ {
		ev, _ := withLag.Next(ctx10s(t))
		pev, _ := plain.Next(ctx10s(t))
		if ev.Seq != want || ev.Lagged != 0 || pev.Seq != want || pev.Lagged != 0 {
			t.Fatalf("got %+v / %+v, want seq %d", ev, pev, want)
		}
	}
	if state(d).Sum != 10 {
		t.Fatal("a slow change subscriber made the fold skip entries")
	}
	withLag.Close()
	if _, err := withLag.Next(ctx10s(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed stream: %v", err)
	}
}

func TestWaitForSeqBlocksUntilFoldedAndHonoursContext(t *testing.T) {
	l := openLog(t, redex.Options{})
	d := startSum(t, l, Options[sumState]{Start: FromBeginning()})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := d.WaitForSeq(ctx, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitForSeq on an empty log = %v, want deadline", err)
	}
	done := make(chan error, 1)
	go func() { done <- d.WaitForSeq(ctx10s(t), 1) }()
	appendAll(t, l, "1", "2")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if state(d).Sum != 3 {
		t.Fatal("WaitForSeq returned before the fold")
	}
}

func TestSnapshotAndOpenFromSnapshotResume(t *testing.T) {
	l := openLog(t, redex.Options{})
	d := startSum(t, l, Options[sumState]{Start: FromBeginning(), Encode: encodeSum})
	snap, err := d.Snapshot()
	if err != nil || snap.Folded || snap.NextSeq() != 0 {
		t.Fatalf("snapshot of a fresh driver = %+v, %v", snap, err)
	}
	appendAll(t, l, "1", "2", "3", "4", "5")
	if err := d.WaitForSeq(ctx10s(t), 4); err != nil {
		t.Fatal(err)
	}
	snap, err = d.Snapshot()
	if err != nil || !snap.Folded || snap.Through != 4 {
		t.Fatalf("snapshot = %+v, %v; want through 4", snap, err)
	}
	appendAll(t, l, "10", "20")
	r, err := OpenFromSnapshot(l, snap, decodeSum, foldSum, Options[sumState]{Encode: encodeSum})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.WaitForSeq(ctx10s(t), 6); err != nil {
		t.Fatal(err)
	}
	var sum int
	var seqs []uint64
	r.View(func(s *sumState) { sum, seqs = s.Sum, s.Seqs })
	if sum != 45 || fmt.Sprint(seqs) != "[5 6]" {
		t.Fatalf("restored driver sum %d over %v, want 45 over [5 6]", sum, seqs)
	}
	if _, err := OpenFromSnapshot(l, Snapshot{State: nil, Folded: true}, decodeSum, foldSum, Options[sumState]{}); err == nil {
		t.Fatal("undecodable snapshot accepted")
	}
	noEnc := startSum(t, l, Options[sumState]{Start: LiveOnly()})
	if _, err := noEnc.Snapshot(); !errors.Is(err, ErrNoEncoder) {
		t.Fatalf("Snapshot without Encode: %v", err)
	}
}

// The driver never skips entries: when its own tail overflows it catches
// up by reading the log.
func TestDriverCatchesUpWhenItsTailLags(t *testing.T) {
	l := openLog(t, redex.Options{TailBuffer: 4})
	var gate sync.Mutex
	d, err := Start(l, sumState{}, func(s *sumState, e redex.Entry) error {
		gate.Lock()
		gate.Unlock() //nolint:staticcheck // the lock is the gate
		return foldSum(s, e)
	}, Options[sumState]{Start: FromBeginning(), ReadBatch: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	gate.Lock()
	for i := 0; i < 100; i++ {
		appendAll(t, l, "1")
	}
	gate.Unlock()
	if err := d.WaitForSeq(ctx10s(t), 99); err != nil {
		t.Fatal(err)
	}
	s := state(d)
	if s.Sum != 100 {
		t.Fatalf("folded %d of 100 entries", s.Sum)
	}
	for i, q := range s.Seqs {
		if q != uint64(i) {
			t.Fatalf("fold order broken at %d: seq %d", i, q)
		}
	}
}

func TestDriverHaltsWhenLogCloses(t *testing.T) {
	l, _ := redex.Open(redex.Options{})
	d := startSum(t, l, Options[sumState]{Start: FromBeginning()})
	ch := d.Changes()
	l.Close()
	if _, err := ch.Next(ctx10s(t)); !errors.Is(err, ErrHalted) || !errors.Is(err, redex.ErrClosed) {
		t.Fatalf("change stream after log close: %v", err)
	}
	if d.IsRunning() {
		t.Fatal("driver still running after its log closed")
	}
}
