package redex

import (
	"fmt"
	"testing"
	"time"
)

func appendAt(t *testing.T, l *Log, clk *fakeClock, ts int64, payload string) {
	t.Helper()
	clk.Set(ts)
	mustAppend(t, l, payload)
}

func assertRetained(t *testing.T, l *Log, first, next uint64) {
	t.Helper()
	if l.FirstSeq() != first || l.NextSeq() != next {
		t.Fatalf("retained [%d,%d), want [%d,%d)", l.FirstSeq(), l.NextSeq(), first, next)
	}
	es, err := l.Read(first, int(next-first)+1)
	if err != nil || uint64(len(es)) != next-first {
		t.Fatalf("Read(%d) = %d entries, %v", first, len(es), err)
	}
}

// Release note: "Age-retention off-by-one (breaking)": an entry whose
// timestamp equals the cutoff is retained.
func TestRetentionAgeBoundaryKeepsEntryAtCutoff(t *testing.T) {
	clk := &fakeClock{}
	l := openMem(t, Options{Clock: clk.Now, Retention: Retention{MaxAge: 100 * time.Second}})
	sec := int64(time.Second)
	appendAt(t, l, clk, 100*sec, "old")
	appendAt(t, l, clk, 200*sec-1, "just before cutoff")
	appendAt(t, l, clk, 200*sec, "at cutoff")
	appendAt(t, l, clk, 250*sec, "young")
	res, err := l.Sweep(time.Unix(0, 300*sec)) // cutoff = 200s
	if err != nil {
		t.Fatal(err)
	}
	if res.Dropped != 2 || res.FirstSeq != 2 {
		t.Fatalf("Sweep = %+v, want 2 dropped, first 2", res)
	}
	e, err := l.Get(2)
	if err != nil || string(e.Payload) != "at cutoff" {
		t.Fatalf("entry at the cutoff was not kept: %+v, %v", e, err)
	}
	// One nanosecond later the boundary entry is strictly before the cutoff.
	if res, _ := l.Sweep(time.Unix(0, 300*sec+1)); res.Dropped != 1 {
		t.Fatalf("Sweep(cutoff+1ns) dropped %d, want 1", res.Dropped)
	}
}

func TestRetentionMaxEventsKeepsNewest(t *testing.T) {
	l := openMem(t, Options{Retention: Retention{MaxEvents: 3}})
	for i := 0; i < 10; i++ {
		mustAppend(t, l, fmt.Sprint(i))
	}
	res, _ := l.Sweep(time.Now())
	if res.Dropped != 7 {
		t.Fatalf("dropped %d, want 7", res.Dropped)
	}
	assertRetained(t, l, 7, 10)
	if res, _ := l.Sweep(time.Now()); res.Dropped != 0 {
		t.Fatal("a second sweep dropped more")
	}
}

func TestRetentionMaxBytesCountsIndexAndPayload(t *testing.T) {
	// Each entry is IndexRecordSize + 68 = 100 bytes.
	l := openMem(t, Options{Retention: Retention{MaxBytes: 250}})
	p := string(make([]byte, 100-IndexRecordSize))
	for i := 0; i < 5; i++ {
		mustAppend(t, l, p)
	}
	if l.Bytes() != 500 {
		t.Fatalf("Bytes = %d, want 500", l.Bytes())
	}
	res, _ := l.Sweep(time.Now())
	if res.Dropped != 3 || l.Bytes() != 200 {
		t.Fatalf("dropped %d leaving %d bytes; want 3 dropped, 200 bytes", res.Dropped, l.Bytes())
	}
	assertRetained(t, l, 3, 5)
}

func TestRetentionPoliciesCombineLargestDropWins(t *testing.T) {
	sec := int64(time.Second)
	cases := []struct {
		name      string
		r         Retention
		wantFirst uint64
	}{
		// 6 entries of 100 bytes at t=1..6s, swept at t=10s.
		{"events wins", Retention{MaxEvents: 2, MaxBytes: 500, MaxAge: 8 * time.Second}, 4},
		{"bytes wins", Retention{MaxEvents: 5, MaxBytes: 100, MaxAge: 8 * time.Second}, 5},
		{"age wins", Retention{MaxEvents: 5, MaxBytes: 500, MaxAge: 5 * time.Second}, 4}, // cutoff 5s keeps seqs 4,5
		{"unbounded", Retention{}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := &fakeClock{}
			l := openMem(t, Options{Clock: clk.Now, Retention: tc.r})
			p := string(make([]byte, 100-IndexRecordSize))
			for i := int64(1); i <= 6; i++ {
				appendAt(t, l, clk, i*sec, p)
			}
			if _, err := l.Sweep(time.Unix(0, 10*sec)); err != nil {
				t.Fatal(err)
			}
			assertRetained(t, l, tc.wantFirst, 6)
		})
	}
}

func TestRetentionRunsOnlyOnSweep(t *testing.T) {
	l := openMem(t, Options{Retention: Retention{MaxEvents: 1}})
	for i := 0; i < 5; i++ {
		mustAppend(t, l, "x")
	}
	if l.Len() != 5 {
		t.Fatalf("appends applied retention on their own: len %d", l.Len())
	}
	l.Sweep(time.Now())
	assertRetained(t, l, 4, 5)
}

func TestRetentionFreesIndexAndHeapChunks(t *testing.T) {
	l := openMem(t, Options{Retention: Retention{MaxEvents: 10}})
	p := make([]byte, 4096)
	for i := 0; i < 3*idxChunkLen; i++ {
		if _, err := l.Append(p); err != nil {
			t.Fatal(err)
		}
		if i%500 == 0 {
			l.Sweep(time.Now())
		}
	}
	l.Sweep(time.Now())
	l.mu.Lock()
	idx, heap := len(l.st.idx), len(l.st.heap)
	l.mu.Unlock()
	if idx > 2 || heap > 2 {
		t.Fatalf("retention kept %d index chunks and %d heap chunks for 10 entries", idx, heap)
	}
	assertRetained(t, l, 3*idxChunkLen-10, 3*idxChunkLen)
	// Dropping everything and appending again keeps seqs dense.
	l2 := openMem(t, Options{Retention: Retention{MaxAge: time.Nanosecond}})
	mustAppend(t, l2, "a")
	l2.Sweep(time.Now().Add(time.Hour))
	if l2.Len() != 0 || mustAppend(t, l2, "b") != 1 {
		t.Fatal("seq did not continue after the log was emptied by retention")
	}
}

// Payload slices handed out before retention drops their heap chunk stay
// intact: the heap is never rewritten, chunks are only released.
func TestPayloadsStayValidAfterRetentionDropsTheirChunk(t *testing.T) {
	l := openMem(t, Options{Retention: Retention{MaxEvents: 1}})
	mustAppend(t, l, "keep-me")
	held, _ := l.Get(0)
	p := make([]byte, 4096)
	for i := 0; i < 3*heapChunkSize/len(p); i++ {
		for j := range p {
			p[j] = byte(i)
		}
		if _, err := l.Append(p); err != nil {
			t.Fatal(err)
		}
		l.Sweep(time.Now())
	}
	if string(held.Payload) != "keep-me" {
		t.Fatalf("held payload changed to %q", held.Payload[:7])
	}
}
