package redex

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"
)

// faultControl injects write and fsync failures into segment files.
type faultControl struct {
	mu       sync.Mutex
	writeErr error
	partial  int // with writeErr: bytes written before failing
	syncErr  error
	syncs    int
	tick     chan time.Time
	ticked   chan struct{}
	// With blockWrite set, a write reports itself on writeEntered and
	// waits for blockWrite before it goes on.
	blockWrite   chan struct{}
	writeEntered chan struct{}
}

// tickAndWait fires the interval worker once and waits until it is done.
func (c *faultControl) tickAndWait() {
	c.tick <- time.Now()
	<-c.ticked
}

func (c *faultControl) hooks() *testHooks {
	h := &testHooks{wrap: func(f segFile) segFile { return &faultFile{segFile: f, c: c} }}
	if c.tick != nil {
		h.tick = c.tick
		c.ticked = make(chan struct{})
		h.ticked = func() { c.ticked <- struct{}{} }
	}
	return h
}

func (c *faultControl) setWriteErr(err error) { c.mu.Lock(); c.writeErr = err; c.mu.Unlock() }
func (c *faultControl) setSyncErr(err error)  { c.mu.Lock(); c.syncErr = err; c.mu.Unlock() }
func (c *faultControl) syncCount() int        { c.mu.Lock(); defer c.mu.Unlock(); return c.syncs }

type faultFile struct {
	segFile
	c *faultControl
}

func (f *faultFile) Write(p []byte) (int, error) {
	f.c.mu.Lock()
	block, entered := f.c.blockWrite, f.c.writeEntered
	f.c.mu.Unlock()
	if block != nil {
		entered <- struct{}{}
		<-block
	}
	f.c.mu.Lock()
	err, partial := f.c.writeErr, f.c.partial
	f.c.mu.Unlock()
	if err != nil {
		n, _ := f.segFile.Write(p[:min(partial, len(p))])
		return n, err
	}
	return f.segFile.Write(p)
}

func (f *faultFile) Sync() error {
	f.c.mu.Lock()
	f.c.syncs++
	err := f.c.syncErr
	f.c.mu.Unlock()
	if err != nil {
		return err
	}
	return f.segFile.Sync()
}

func openDiskT(t *testing.T, o Options) *Log {
	t.Helper()
	l, err := Open(o)
	if err != nil {
		t.Fatalf("Open(%s): %v", o.Dir, err)
	}
	return l
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

func payloadFor(i int) []byte { return []byte(fmt.Sprintf("payload-%04d", i)) }

func TestDiskReopenRecoversEntriesAndContinuesSeq(t *testing.T) {
	dir := t.TempDir()
	clk := &fakeClock{now: 1000}
	l := openDiskT(t, Options{Dir: dir, SegmentBytes: 256, Clock: clk.Now})
	for i := 0; i < 30; i++ {
		clk.Set(int64(1000 + i))
		if _, err := l.Append(payloadFor(i)); err != nil {
			t.Fatal(err)
		}
	}
	l.AppendInline([8]byte{9, 9, 9, 9, 9, 9, 9, 9})
	l.AppendWithFlags([]byte("t"), FlagTombstone)
	l.AppendBatch([][]byte{[]byte("b0"), []byte("b1")})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(segments(t, dir)); n < 3 {
		t.Fatalf("expected segment rolls, got %d segments", n)
	}
	l = openDiskT(t, Options{Dir: dir, SegmentBytes: 256})
	defer l.Close()
	if l.NextSeq() != 34 || l.FirstSeq() != 0 {
		t.Fatalf("reopened next=%d first=%d, want 34, 0", l.NextSeq(), l.FirstSeq())
	}
	es, _ := l.Read(0, 100)
	for i := 0; i < 30; i++ {
		if !bytes.Equal(es[i].Payload, payloadFor(i)) || es[i].Time != int64(1000+i) {
			t.Fatalf("entry %d = %q at %d", i, es[i].Payload, es[i].Time)
		}
	}
	if es[30].Flags&FlagInline == 0 || es[30].Payload[0] != 9 || es[31].Flags != FlagTombstone || string(es[33].Payload) != "b1" {
		t.Fatalf("inline/flags/batch entries not recovered: %+v", es[30:])
	}
	if seq := mustAppend(t, l, "after"); seq != 34 {
		t.Fatalf("append after reopen got seq %d, want 34", seq)
	}
}

// Crash recovery: cut the last segment at every byte offset inside its
// last frame (and, for a one-frame segment, inside its header) and reopen.
// Everything before the torn frame must survive; the torn frame is cut.
func TestDiskTornWriteTruncatedAtEveryOffsetOfLastRecord(t *testing.T) {
	for _, lastSegOneFrame := range []bool{false, true} {
		t.Run(fmt.Sprintf("one-frame-segment=%v", lastSegOneFrame), func(t *testing.T) {
			src := t.TempDir()
			segBytes := int64(1 << 20)
			if lastSegOneFrame {
				segBytes = 200 // every frame below rolls into a new segment after ~4 frames
			}
			l := openDiskT(t, Options{Dir: src, SegmentBytes: segBytes})
			const n = 9
			for i := 0; i < n; i++ {
				if _, err := l.Append(payloadFor(i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			segs := segments(t, src)
			lastSeg := segs[len(segs)-1]
			full, _ := os.ReadFile(lastSeg)
			frameLen := frameHeaderSize + len(payloadFor(n-1))
			start := len(full) - frameLen
			if lastSegOneFrame {
				if start != segHeaderSize {
					t.Fatalf("setup: last segment holds more than one frame (%d bytes)", len(full))
				}
				start = 0 // also tear the segment header
			}
			for cut := start; cut < len(full); cut++ {
				dir := t.TempDir()
				for _, s := range segs {
					b, _ := os.ReadFile(s)
					if s == lastSeg {
						b = b[:cut]
					}
					os.WriteFile(filepath.Join(dir, filepath.Base(s)), b, 0o644)
				}
				l, err := Open(Options{Dir: dir, SegmentBytes: segBytes, Logger: discardLogger()})
				if err != nil {
					t.Fatalf("cut at %d: reopen: %v", cut, err)
				}
				if l.NextSeq() != n-1 {
					t.Fatalf("cut at %d: NextSeq = %d, want %d", cut, l.NextSeq(), n-1)
				}
				es, err := l.Read(0, n)
				if err != nil || len(es) != n-1 {
					t.Fatalf("cut at %d: read %d entries, %v", cut, len(es), err)
				}
				for i, e := range es {
					if !bytes.Equal(e.Payload, payloadFor(i)) {
						t.Fatalf("cut at %d: entry %d = %q", cut, i, e.Payload)
					}
				}
				// The torn bytes are gone: a new append lands cleanly and
				// survives another reopen.
				if seq, err := l.Append([]byte("again")); err != nil || seq != n-1 {
					t.Fatalf("cut at %d: append after recovery = %d, %v", cut, seq, err)
				}
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
				l, err = Open(Options{Dir: dir, SegmentBytes: segBytes})
				if err != nil || l.NextSeq() != n {
					t.Fatalf("cut at %d: second reopen next=%d err=%v", cut, l.NextSeq(), err)
				}
				if e, _ := l.Get(n - 1); string(e.Payload) != "again" {
					t.Fatalf("cut at %d: recovered entry %q", cut, e.Payload)
				}
				l.Close()
			}
		})
	}
}

func TestDiskCorruptLastRecordIsTruncated(t *testing.T) {
	dir := t.TempDir()
	l := openDiskT(t, Options{Dir: dir})
	for i := 0; i < 3; i++ {
		mustAppend(t, l, "abcdef")
	}
	l.Close()
	seg := segments(t, dir)[0]
	b, _ := os.ReadFile(seg)
	b[len(b)-1] ^= 0xff // flip a payload byte of the last frame
	os.WriteFile(seg, b, 0o644)
	l = openDiskT(t, Options{Dir: dir, Logger: discardLogger()})
	defer l.Close()
	if l.NextSeq() != 2 {
		t.Fatalf("NextSeq = %d, want 2 (bad frame cut)", l.NextSeq())
	}
}

func TestDiskCorruptionBeforeLastSegmentIsAnError(t *testing.T) {
	dir := t.TempDir()
	l := openDiskT(t, Options{Dir: dir, SegmentBytes: 100})
	for i := 0; i < 10; i++ {
		mustAppend(t, l, "0123456789")
	}
	l.Close()
	segs := segments(t, dir)
	if len(segs) < 2 {
		t.Fatal("setup: want several segments")
	}
	b, _ := os.ReadFile(segs[0])
	b[len(b)-3] ^= 1
	os.WriteFile(segs[0], b, 0o644)
	if _, err := Open(Options{Dir: dir, SegmentBytes: 100}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with a corrupt middle segment: %v, want ErrCorrupt", err)
	}
}

func TestDiskFailedWriteIsCutBackAndNotCommitted(t *testing.T) {
	dir := t.TempDir()
	ctl := &faultControl{partial: 10}
	l := openDiskT(t, Options{Dir: dir, hooks: ctl.hooks()})
	mustAppend(t, l, "first")
	ctl.setWriteErr(errors.New("injected ENOSPC"))
	if _, err := l.Append([]byte("lost")); err == nil {
		t.Fatal("append succeeded despite a failed write")
	}
	ctl.setWriteErr(nil)
	if seq := mustAppend(t, l, "second"); seq != 1 {
		t.Fatalf("seq after failed write = %d, want 1", seq)
	}
	l.Close()
	l = openDiskT(t, Options{Dir: dir})
	defer l.Close()
	es, _ := l.Read(0, 10)
	if len(es) != 2 || string(es[1].Payload) != "second" {
		t.Fatalf("recovered %d entries; a partial write leaked: %+v", len(es), es)
	}
}

func TestDiskFsyncEveryNSyncsEveryNAppends(t *testing.T) {
	ctl := &faultControl{}
	l := openDiskT(t, Options{Dir: t.TempDir(), Fsync: EveryN(3), hooks: ctl.hooks()})
	defer l.Close()
	base := ctl.syncCount()
	for i := 0; i < 9; i++ {
		mustAppend(t, l, "x")
		if want := (i + 1) / 3; ctl.syncCount()-base != want {
			t.Fatalf("after %d appends %d fsyncs, want %d", i+1, ctl.syncCount()-base, want)
		}
	}
}

func TestDiskFsyncNeverSyncsOnlyOnSyncAndClose(t *testing.T) {
	ctl := &faultControl{}
	l := openDiskT(t, Options{Dir: t.TempDir(), Fsync: FsyncPolicy{Mode: FsyncNever}, hooks: ctl.hooks()})
	base := ctl.syncCount()
	for i := 0; i < 50; i++ {
		mustAppend(t, l, "x")
	}
	if ctl.syncCount() != base {
		t.Fatal("FsyncNever synced on append")
	}
	if err := l.Sync(); err != nil || ctl.syncCount() != base+1 {
		t.Fatalf("Sync: %v, syncs %d", err, ctl.syncCount()-base)
	}
	if err := l.Close(); err != nil || ctl.syncCount() != base+2 {
		t.Fatalf("Close: %v, syncs %d", err, ctl.syncCount()-base)
	}
}

func TestDiskFsyncIntervalSyncsOnTickWhenDirty(t *testing.T) {
	ctl := &faultControl{tick: make(chan time.Time)}
	l := openDiskT(t, Options{Dir: t.TempDir(), Fsync: Interval(time.Hour), hooks: ctl.hooks()})
	defer l.Close()
	base := ctl.syncCount()
	ctl.tickAndWait()
	if ctl.syncCount() != base {
		t.Fatal("interval worker synced a clean segment")
	}
	mustAppend(t, l, "x")
	if ctl.syncCount() != base {
		t.Fatal("Interval policy synced on the append path")
	}
	ctl.tickAndWait()
	if ctl.syncCount() != base+1 {
		t.Fatalf("interval worker synced %d times, want 1", ctl.syncCount()-base)
	}
}

func TestDiskFsyncIntervalOrBytesSyncsAtByteThreshold(t *testing.T) {
	ctl := &faultControl{}
	frame := uint64(frameHeaderSize + 10)
	l := openDiskT(t, Options{Dir: t.TempDir(), Fsync: IntervalOrBytes(0, 3*frame), hooks: ctl.hooks()})
	defer l.Close()
	base := ctl.syncCount()
	for i := 0; i < 6; i++ {
		mustAppend(t, l, "0123456789")
	}
	if got := ctl.syncCount() - base; got != 2 {
		t.Fatalf("byte threshold of 3 frames: %d fsyncs after 6 frames, want 2", got)
	}
}

// Fsync errors are returned to the caller and poison the log.
func TestDiskFsyncErrorIsPropagatedNotSwallowed(t *testing.T) {
	dir := t.TempDir()
	ctl := &faultControl{}
	l := openDiskT(t, Options{Dir: dir, Fsync: EveryN(1), hooks: ctl.hooks()})
	mustAppend(t, l, "durable")
	injected := errors.New("injected EIO on fsync")
	ctl.setSyncErr(injected)
	if _, err := l.Append([]byte("not durable")); !errors.Is(err, injected) {
		t.Fatalf("append with failing fsync: %v, want the fsync error", err)
	}
	if l.NextSeq() != 1 {
		t.Fatalf("failed append committed: NextSeq %d", l.NextSeq())
	}
	ctl.setSyncErr(nil)
	if _, err := l.Append([]byte("later")); !errors.Is(err, injected) {
		t.Fatalf("append after a failed fsync: %v, want the sticky fsync error", err)
	}
	if err := l.Sync(); !errors.Is(err, injected) {
		t.Fatalf("Sync after a failed fsync: %v", err)
	}
	if err := l.Close(); !errors.Is(err, injected) {
		t.Fatalf("Close after a failed fsync: %v, want it reported", err)
	}
	l = openDiskT(t, Options{Dir: dir})
	defer l.Close()
	if l.NextSeq() != 1 {
		t.Fatalf("the entry whose fsync failed survived a reopen: NextSeq %d", l.NextSeq())
	}
}

func TestDiskIntervalFsyncErrorSurfacesOnNextAppend(t *testing.T) {
	ctl := &faultControl{tick: make(chan time.Time)}
	l := openDiskT(t, Options{Dir: t.TempDir(), Fsync: Interval(time.Hour), hooks: ctl.hooks(), Logger: discardLogger()})
	mustAppend(t, l, "x")
	injected := errors.New("injected fsync failure")
	ctl.setSyncErr(injected)
	ctl.tickAndWait()
	if _, err := l.Append([]byte("y")); !errors.Is(err, injected) {
		t.Fatalf("append after background fsync failure: %v", err)
	}
	if err := l.Close(); !errors.Is(err, injected) {
		t.Fatalf("Close: %v", err)
	}
}

func TestDiskRetentionDeletesSegmentsAndSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	o := Options{Dir: dir, SegmentBytes: 120, Retention: Retention{MaxEvents: 3}}
	l := openDiskT(t, o)
	for i := 0; i < 20; i++ {
		if _, err := l.Append(payloadFor(i)); err != nil {
			t.Fatal(err)
		}
	}
	before := len(segments(t, dir))
	if _, err := l.Sweep(time.Now()); err != nil {
		t.Fatal(err)
	}
	after := len(segments(t, dir))
	if after >= before {
		t.Fatalf("sweep kept all %d segments", before)
	}
	l.Close()
	l = openDiskT(t, o)
	defer l.Close()
	if l.FirstSeq() != 17 || l.NextSeq() != 20 {
		t.Fatalf("reopened retained [%d,%d), want [17,20)", l.FirstSeq(), l.NextSeq())
	}
	if _, err := l.Get(16); !errors.Is(err, ErrPruned) {
		t.Fatalf("a dropped entry came back after reopen: %v", err)
	}
}

func TestDiskRetentionDroppingEverythingKeepsSeqAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	clk := &fakeClock{now: 1}
	o := Options{Dir: dir, Clock: clk.Now, Retention: Retention{MaxAge: time.Second}}
	l := openDiskT(t, o)
	for i := 0; i < 5; i++ {
		mustAppend(t, l, "old")
	}
	if res, err := l.Sweep(time.Unix(0, int64(time.Hour))); err != nil || res.Dropped != 5 {
		t.Fatalf("Sweep = %+v, %v", res, err)
	}
	l.Close()
	l = openDiskT(t, o)
	defer l.Close()
	if l.Len() != 0 || l.NextSeq() != 5 || l.FirstSeq() != 5 {
		t.Fatalf("reopened len=%d next=%d first=%d; want empty at 5", l.Len(), l.NextSeq(), l.FirstSeq())
	}
	if seq := mustAppend(t, l, "new"); seq != 5 {
		t.Fatalf("append after reopen got %d, want 5", seq)
	}
}

// One flipped byte in an early frame of the active segment is corruption,
// not a torn tail: intact frames follow it, and they may have been fsynced.
// Recovery must refuse to open rather than silently cut them (only a bad
// suffix with nothing intact after it is a torn write).
func TestDiskCorruptFrameFollowedByIntactFramesInLastSegmentIsAnError(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   int // byte offset inside frame 1
	}{
		{"payload", frameHeaderSize + 2},
		{"length-field", 9},
		{"seq-field", 17},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openDiskT(t, Options{Dir: dir, Fsync: EveryN(1)})
			for i := range 5 {
				mustAppend(t, l, string(payloadFor(i)))
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			seg := segments(t, dir)[0]
			b, _ := os.ReadFile(seg)
			frame1 := segHeaderSize + frameHeaderSize + len(payloadFor(0))
			b[frame1+tc.at] ^= 0x04
			if err := os.WriteFile(seg, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if l, err := Open(Options{Dir: dir, Logger: discardLogger()}); !errors.Is(err, ErrCorrupt) {
				if l != nil {
					l.Close()
				}
				t.Fatalf("Open with a bad frame before intact ones: %v, want ErrCorrupt", err)
			}
			after, _ := os.ReadFile(seg)
			if !bytes.Equal(after, b) {
				t.Fatal("Open refused the segment but still truncated it")
			}
		})
	}
}
