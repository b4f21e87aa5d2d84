package redex

import (
	"math/rand/v2"
	"testing"
	"time"
)

// fakeClockSource is a clockSource whose wall and monotonic clocks move
// only when the test advances them (together, as real clocks do).
type fakeClockSource struct {
	wallNs, monoNs int64
	wallReads      int
}

func (f *fakeClockSource) mono() int64 { return f.monoNs }
func (f *fakeClockSource) wall() int64 {
	f.wallReads++
	return f.wallNs
}
func (f *fakeClockSource) advance(d time.Duration) {
	f.wallNs += int64(d)
	f.monoNs += int64(d)
}

// stampOfNextAppend appends and returns the entry's stamp.
func stampOfNextAppend(t *testing.T, l *Log) int64 {
	t.Helper()
	seq := mustAppend(t, l, "x")
	e, err := l.Get(seq)
	if err != nil {
		t.Fatal(err)
	}
	return e.Time
}

// The default clock reuses one wall reading for up to ClockResolution,
// rounded up, and decides freshness by a monotonic reading on every append
// rather than by a timer. So however long the log sits idle, and whatever
// delays goroutines, a stamp is never earlier than its append and at most
// ClockResolution later (the flaky timer-based predecessor of this test
// slept 5 ms and hoped the timer goroutine had run).
func TestDefaultClockStampsAreNotEarlierThanAppendAndAdvance(t *testing.T) {
	const res = int64(ClockResolution)
	src := &fakeClockSource{wallNs: 1_700_000_000_000_000_000, monoNs: 5}
	l := openMem(t, Options{hooks: &testHooks{clock: src}})

	t0 := src.wallNs
	if got := stampOfNextAppend(t, l); got != t0+res {
		t.Fatalf("first stamp %d, want wall+resolution %d", got, t0+res)
	}
	// Within the resolution the reading is reused and still not early.
	src.advance(ClockResolution - 1)
	if got := stampOfNextAppend(t, l); got != t0+res || src.wallReads != 1 {
		t.Fatalf("stamp %d after %v (wall reads %d), want the cached %d", got, ClockResolution-1, src.wallReads, t0+res)
	}
	// At the resolution the cached stamp has caught up with the true time;
	// any later it would be early, so it is re-read here.
	src.advance(1)
	if got := stampOfNextAppend(t, l); got != src.wallNs+res || src.wallReads != 2 {
		t.Fatalf("stamp %d at the resolution boundary (wall reads %d), want a fresh %d", got, src.wallReads, src.wallNs+res)
	}
	// A long idle period, with no timer or goroutine in the picture.
	src.advance(50 * ClockResolution)
	if got := stampOfNextAppend(t, l); got != src.wallNs+res {
		t.Fatalf("stamp %d after %v idle, want %d", got, 50*ClockResolution, src.wallNs+res)
	}

	// Arbitrary gaps: every stamp in [true time, true time + resolution],
	// and stamps never go backwards.
	rng := rand.New(rand.NewPCG(1, 2))
	prev := int64(0)
	for i := range 5000 {
		src.advance(time.Duration(rng.Int64N(3 * res)))
		got := stampOfNextAppend(t, l)
		if got < src.wallNs || got > src.wallNs+res {
			t.Fatalf("append %d: stamp %d outside [%d, %d+res]", i, got, src.wallNs, src.wallNs)
		}
		if got < prev {
			t.Fatalf("append %d: stamp %d before the previous %d", i, got, prev)
		}
		prev = got
	}
}

// With the real clocks: the first stamp of a fresh log is a fresh reading
// rounded up, and no later stamp is earlier than its append.
func TestDefaultClockWithSystemClockIsNeverEarly(t *testing.T) {
	l := openMem(t, Options{})
	before := time.Now().UnixNano()
	first := stampOfNextAppend(t, l)
	after := time.Now().UnixNano()
	if first < before+int64(ClockResolution) || first > after+int64(ClockResolution) {
		t.Fatalf("first stamp %d outside [%d, %d] + resolution", first, before, after)
	}
	for i := range 2000 {
		before := time.Now().UnixNano()
		if got := stampOfNextAppend(t, l); got < before {
			t.Fatalf("append %d: stamp %d earlier than the append started (%d)", i, got, before)
		}
	}
}
