package redex

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// countingHandler counts warnings and keeps the last one's attributes.
type countingHandler struct {
	mu    sync.Mutex
	warns int
	last  map[string]slog.Value
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countingHandler) WithGroup(string) slog.Handler            { return h }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level != slog.LevelWarn {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.warns++
	h.last = map[string]slog.Value{}
	r.Attrs(func(a slog.Attr) bool { h.last[a.Key] = a.Value; return true })
	return nil
}

func (h *countingHandler) count() int { h.mu.Lock(); defer h.mu.Unlock(); return h.warns }

// indexRig drives an Index into lags deterministically: apply blocks while
// the gate is held, so appends overflow the log's tail buffer.
type indexRig struct {
	l      *Log
	ix     *Index[string, int]
	gate   sync.Mutex
	now    atomic.Int64 // fake clock, ns
	mu     sync.Mutex
	sleeps []time.Duration
	logs   *countingHandler
}

func newIndexRig(t *testing.T) *indexRig {
	r := &indexRig{logs: &countingHandler{}}
	r.l = openMem(t, Options{TailBuffer: 4})
	r.ix = NewIndex(r.l, func(m map[string]int, e Entry) {
		r.gate.Lock()
		r.gate.Unlock() //nolint:staticcheck // the lock is the gate
		m[string(e.Payload)]++
	}, IndexOptions{
		Now: func() time.Time { return time.Unix(0, r.now.Load()) },
		Sleep: func(ctx context.Context, d time.Duration) error {
			r.mu.Lock()
			r.sleeps = append(r.sleeps, d)
			r.mu.Unlock()
			return ctx.Err()
		},
		Logger: slog.New(r.logs),
	})
	t.Cleanup(r.ix.Close)
	waitUntil(t, "index subscribed", func() bool { return r.l.subsAtomic.Load() == 1 })
	return r
}

// lag makes the index overflow its tail once and waits for it to re-tail.
func (r *indexRig) lag(t *testing.T) {
	t.Helper()
	want := r.ix.LagResets() + 1
	r.gate.Lock()
	for i := 0; i < 8; i++ { // 1 in apply + 4 buffered + overflow
		mustAppend(t, r.l, "burst")
	}
	r.gate.Unlock()
	waitUntil(t, "lag reset and re-tail", func() bool {
		return r.ix.LagResets() == want && r.l.subsAtomic.Load() == 1
	})
}

func (r *indexRig) sleepLog() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.sleeps...)
}

func TestIndexProjectsRetainedThenLiveEntries(t *testing.T) {
	l := openMem(t, Options{})
	for _, k := range []string{"a", "b", "a"} {
		mustAppend(t, l, k)
	}
	ix := NewIndex(l, func(m map[string]int, e Entry) { m[string(e.Payload)]++ }, IndexOptions{})
	defer ix.Close()
	mustAppend(t, l, "a")
	waitUntil(t, "index applied 4 entries", func() bool { return ix.NextSeq() == 4 })
	if v, _ := ix.Get("a"); v != 3 {
		t.Fatalf("a = %d, want 3", v)
	}
	if ix.Len() != 2 || ix.LagResets() != 0 {
		t.Fatalf("len %d resets %d", ix.Len(), ix.LagResets())
	}
}

// Release note: "Index task exits permanently after Lagged". After a lag
// the index clears itself, re-tails live and keeps projecting.
func TestIndexRecoversAfterLaggedAndKeepsProjecting(t *testing.T) {
	r := newIndexRig(t)
	mustAppend(t, r.l, "before")
	waitUntil(t, "first entry", func() bool { return r.ix.NextSeq() == 1 })
	r.lag(t)
	if _, ok := r.ix.Get("before"); ok {
		t.Fatal("index kept pre-lag state after a lossy reset")
	}
	seq := mustAppend(t, r.l, "after")
	waitUntil(t, "post-reset entry", func() bool { return r.ix.NextSeq() == seq+1 })
	if v, ok := r.ix.Get("after"); !ok || v != 1 {
		t.Fatalf("index did not resume after Lagged: after=%d,%v", v, ok)
	}
}

// Release note: "RedexIndex::clear() on Lagged is silent": every clear is
// counted in LagResets.
func TestIndexLagResetsCountsEveryClear(t *testing.T) {
	r := newIndexRig(t)
	for i := uint64(1); i <= 3; i++ {
		r.lag(t)
		if r.ix.LagResets() != i {
			t.Fatalf("LagResets = %d after %d lags", r.ix.LagResets(), i)
		}
	}
}

// Release note: "RedexIndex saturation-resume can hot-loop": consecutive
// lags back off 5/20/60/250 ms (saturating) and warnings are rate-limited.
func TestIndexSaturationResumeBacksOffAndRateLimitsWarnings(t *testing.T) {
	r := newIndexRig(t)
	for i := 0; i < 6; i++ {
		r.lag(t)
	}
	ms := time.Millisecond
	want := []time.Duration{5 * ms, 20 * ms, 60 * ms, 250 * ms, 250 * ms, 250 * ms}
	got := r.sleepLog()
	if len(got) != len(want) {
		t.Fatalf("sleeps %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sleeps %v, want %v", got, want)
		}
	}
	if r.logs.count() != 1 {
		t.Fatalf("%d lag warnings within one rate-limit window, want 1", r.logs.count())
	}
	// After a healthy stretch longer than HealthyAfter and LogEvery, the
	// backoff starts over and one warning reports what was suppressed.
	r.now.Add(int64(time.Minute))
	r.lag(t)
	if got := r.sleepLog(); got[len(got)-1] != 5*ms {
		t.Fatalf("backoff after a healthy stretch = %v, want 5ms", got[len(got)-1])
	}
	if r.logs.count() != 2 {
		t.Fatalf("warnings = %d, want 2", r.logs.count())
	}
	r.logs.mu.Lock()
	supp := r.logs.last["suppressed_warnings"].Int64()
	r.logs.mu.Unlock()
	if supp != 5 {
		t.Fatalf("suppressed_warnings = %d, want 5", supp)
	}
}

func TestIndexStopsWhenLogCloses(t *testing.T) {
	l, _ := Open(Options{})
	ix := NewIndex(l, func(m map[string]int, e Entry) {}, IndexOptions{})
	l.Close()
	done := make(chan struct{})
	go func() { ix.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("index did not stop after its log closed")
	}
}
