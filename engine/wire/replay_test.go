package wire

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
)

// recordHandler keeps log records so tests can assert on them.
type recordHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func attrs(r slog.Record) map[string]slog.Value {
	m := map[string]slog.Value{}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value; return true })
	return m
}

func TestReplayRejectsDuplicatesAndTooOld(t *testing.T) {
	g := NewReplayGuard(128, slog.New(&recordHandler{}))
	for _, s := range []uint64{10, 12, 11, 200} {
		if err := g.Commit(1, s); err != nil {
			t.Fatalf("commit %d: %v", s, err)
		}
	}
	if err := g.Commit(1, 200); !errors.Is(err, ErrReplayDuplicate) {
		t.Fatalf("duplicate highest: err = %v", err)
	}
	if err := g.Check(1, 200); !errors.Is(err, ErrReplayDuplicate) {
		t.Fatalf("Check duplicate: err = %v", err)
	}
	// 200-128 = 72 is the oldest still outside; 73 is the oldest inside.
	if err := g.Commit(1, 72); !errors.Is(err, ErrReplayTooOld) {
		t.Fatalf("too old: err = %v", err)
	}
	if err := g.Commit(1, 73); err != nil {
		t.Fatalf("oldest in window: %v", err)
	}
	if err := g.Commit(1, 73); !errors.Is(err, ErrReplayDuplicate) {
		t.Fatalf("duplicate in window: err = %v", err)
	}
	// Out-of-order within the window is fine, once.
	if err := g.Commit(1, 150); err != nil {
		t.Fatal(err)
	}
	// Peers are independent.
	if err := g.Commit(2, 200); err != nil {
		t.Fatalf("other peer: %v", err)
	}
	g.Forget(1)
	if err := g.Commit(1, 5); err != nil {
		t.Fatalf("forgotten peer starts afresh: %v", err)
	}
}

func TestReplayCheckDoesNotRecord(t *testing.T) {
	g := NewReplayGuard(64, nil)
	if err := g.Check(1, 5); err != nil {
		t.Fatal(err)
	}
	if err := g.Commit(1, 5); err != nil {
		t.Fatalf("Check must not record: %v", err)
	}
}

func TestReplaySlidingForgetsSlotsItPasses(t *testing.T) {
	w := NewReplayWindow(64)
	for _, s := range []uint64{0, 1, 2} {
		if _, err := w.commit(s); err != nil {
			t.Fatal(err)
		}
	}
	// Slide forward by less than a window: slots 3..65 reuse bits of
	// numbers now too old, which must not read as duplicates.
	if _, err := w.commit(65); err != nil {
		t.Fatal(err)
	}
	for s := uint64(3); s < 65; s++ {
		if err := w.Check(s); err != nil {
			t.Fatalf("seq %d unseen but refused: %v", s, err)
		}
	}
	if err := w.Check(1); !errors.Is(err, ErrReplayTooOld) {
		t.Fatalf("seq 1: err = %v, want ErrReplayTooOld", err)
	}
}

// Net v0.9 "Anti-replay window cleared on large legitimate jumps": the
// clear still happens (everything held is too old) but is logged as a
// structured warning, not done silently.
func TestAntiReplayWindowClearedOnLargeLegitimateJumps(t *testing.T) {
	h := &recordHandler{}
	g := NewReplayGuard(256, slog.New(h))
	for s := uint64(1); s <= 10; s++ {
		if err := g.Commit(42, s); err != nil {
			t.Fatal(err)
		}
	}
	// A jump inside the window logs nothing.
	if err := g.Commit(42, 200); err != nil {
		t.Fatal(err)
	}
	if len(h.records) != 0 {
		t.Fatalf("jump within the window logged %d records", len(h.records))
	}
	if err := g.Commit(42, 200+256); err != nil {
		t.Fatalf("a legitimate large jump is accepted: %v", err)
	}
	if len(h.records) != 1 {
		t.Fatalf("got %d log records, want 1 warning", len(h.records))
	}
	r := h.records[0]
	if r.Level != slog.LevelWarn {
		t.Fatalf("level = %v, want WARN", r.Level)
	}
	a := attrs(r)
	want := map[string]uint64{"peer": 42, "previous_highest": 200, "sequence": 456, "gap": 256, "window": 256}
	for k, v := range want {
		if got, ok := a[k]; !ok || got.Uint64() != v {
			t.Errorf("attr %s = %v, want %d", k, got, v)
		}
	}
	// The bitmap really was cleared and re-anchored: the new highest is a
	// duplicate, a number just below it is fresh, the old range too old.
	if err := g.Commit(42, 456); !errors.Is(err, ErrReplayDuplicate) {
		t.Fatalf("err = %v", err)
	}
	if err := g.Commit(42, 455); err != nil {
		t.Fatalf("fresh number after clear: %v", err)
	}
	if err := g.Commit(42, 200); !errors.Is(err, ErrReplayTooOld) {
		t.Fatalf("pre-jump number: err = %v", err)
	}
	// Rejected packets never log or move the window.
	if len(h.records) != 1 {
		t.Fatalf("extra log records: %d", len(h.records))
	}
}

func TestReplayWindowSizeRoundsUp(t *testing.T) {
	if NewReplayWindow(65).Size() != 128 || NewReplayWindow(0).Size() != DefaultReplayWindow {
		t.Fatal("window size rounding")
	}
}

func TestReplayGuardConcurrentCommitsAcceptEachOnce(t *testing.T) {
	g := NewReplayGuard(4096, slog.New(&recordHandler{}))
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := uint64(0); s < 1000; s++ {
				if g.Commit(1, s) == nil {
					mu.Lock()
					accepted++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if accepted != 1000 {
		t.Fatalf("accepted %d commits of 1000 distinct numbers from 4 racers, want exactly 1000", accepted)
	}
}

// clearRange must clear exactly the slots the window slides past, across
// word boundaries and the ring's wrap-around, and nothing else.
func TestReplayClearRangeMatchesBitByBit(t *testing.T) {
	for _, c := range []struct{ from, to uint64 }{{3, 5}, {60, 70}, {0, 64}, {1, 127}, {100, 100 + 127}, {250, 260}, {64, 128}} {
		w := NewReplayWindow(128)
		for i := range w.bits {
			w.bits[i] = ^uint64(0)
		}
		w.clearRange(c.from, c.to)
		for s := uint64(0); s < 128; s++ {
			word, mask := w.bit(s)
			set := w.bits[word]&mask != 0
			inRange := false
			for x := c.from; x < c.to; x++ {
				if x%128 == s {
					inRange = true
				}
			}
			if set == inRange {
				t.Fatalf("clearRange(%d, %d): slot %d set=%v", c.from, c.to, s, set)
			}
		}
	}
}
