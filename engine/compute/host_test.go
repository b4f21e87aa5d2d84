package compute

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sumDaemon adds the first 8 bytes of each payload; its hooks let tests
// observe what happens while daemon code runs.
type sumDaemon struct {
	total     uint64
	n         uint64
	failAt    map[uint64]bool
	onProcess func(ev Event)
	onSnap    func()
	snaps     int
}

func (d *sumDaemon) Name() string   { return "sum" }
func (d *sumDaemon) Stateful() bool { return true }
func (d *sumDaemon) Process(ev Event) ([][]byte, error) {
	if d.onProcess != nil {
		d.onProcess(ev)
	}
	if d.failAt[ev.Seq] {
		return nil, errors.New("injected")
	}
	d.total += uint64(len(ev.Payload))
	d.n++
	return [][]byte{[]byte(fmt.Sprint(d.total))}, nil
}
func (d *sumDaemon) Snapshot() ([]byte, error) {
	d.snaps++
	if d.onSnap != nil {
		d.onSnap()
	}
	b := binary.LittleEndian.AppendUint64(nil, d.total)
	return binary.LittleEndian.AppendUint64(b, d.n), nil
}
func (d *sumDaemon) Restore(b []byte) error {
	if len(b) != 16 {
		return errors.New("bad state")
	}
	d.total, d.n = binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])
	return nil
}

func ev(seq uint64) Event { return Event{Seq: seq, Payload: bytes.Repeat([]byte{1}, int(seq%7)+1)} }

func TestHostAppliesStrictlyInSeqOrder(t *testing.T) {
	d := &sumDaemon{}
	h := NewHost("d", "sum", nil, d, CursorAt(0), HostConfig{})
	if _, err := h.Deliver(ev(1)); !errors.Is(err, ErrGap) {
		t.Fatalf("seq 1 before 0: got %v, want ErrGap", err)
	}
	for s := uint64(0); s < 5; s++ {
		if _, err := h.Deliver(ev(s)); err != nil {
			t.Fatalf("deliver %d: %v", s, err)
		}
	}
	if _, err := h.Deliver(ev(3)); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("redelivered seq 3: got %v, want ErrDuplicate", err)
	}
	if d.n != 5 || h.Cursor().Next() != 5 || h.Processed() != 5 {
		t.Fatalf("applied %d, cursor %d, processed %d; want 5", d.n, h.Cursor().Next(), h.Processed())
	}
}

func TestProcessErrorLeavesEventUnapplied(t *testing.T) {
	d := &sumDaemon{failAt: map[uint64]bool{2: true}}
	h := NewHost("d", "sum", nil, d, CursorAt(0), HostConfig{})
	for s := uint64(0); s < 2; s++ {
		if _, err := h.Deliver(ev(s)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := h.Deliver(ev(2))
	var pe *ProcessError
	if !errors.As(err, &pe) || pe.Seq != 2 {
		t.Fatalf("got %v, want *ProcessError at seq 2", err)
	}
	if h.Cursor().Next() != 2 {
		t.Fatalf("cursor moved to %d after a failed Process", h.Cursor().Next())
	}
	delete(d.failAt, 2)
	if _, err := h.Deliver(ev(2)); err != nil {
		t.Fatalf("redeliver after failure: %v", err)
	}
}

// Release note "Migration next_seq overflow": the cursor saturates.
func TestMigrationNextSeqOverflowSaturates(t *testing.T) {
	d := &sumDaemon{}
	h := NewHost("d", "sum", nil, d, CursorAt(math.MaxUint64-1), HostConfig{})
	for _, s := range []uint64{math.MaxUint64 - 1, math.MaxUint64} {
		if _, err := h.Deliver(ev(s)); err != nil {
			t.Fatalf("deliver %d: %v", s, err)
		}
	}
	c := h.Cursor()
	if c.Next() != math.MaxUint64 || !c.Exhausted() {
		t.Fatalf("cursor = %d exhausted=%v, want saturated at max", c.Next(), c.Exhausted())
	}
	for _, s := range []uint64{0, math.MaxUint64} {
		if _, err := h.Deliver(ev(s)); !errors.Is(err, ErrDuplicate) {
			t.Fatalf("seq %d after exhaustion: got %v, want ErrDuplicate (no wrap)", s, err)
		}
	}
	if d.n != 2 {
		t.Fatalf("applied %d events, want 2", d.n)
	}
}

type recordingStore struct {
	mu    sync.Mutex
	snaps []*Snapshot
	check func()
}

func (s *recordingStore) SaveSnapshot(sn *Snapshot) error {
	if s.check != nil {
		s.check()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snaps = append(s.snaps, sn)
	return nil
}

func TestPeriodicSnapshotEveryNEvents(t *testing.T) {
	store := &recordingStore{}
	d := &sumDaemon{}
	h := NewHost("d", "sum", nil, d, CursorAt(0), HostConfig{SnapshotEvery: 4, Store: store})
	for s := uint64(0); s < 10; s++ {
		if _, err := h.Deliver(ev(s)); err != nil {
			t.Fatal(err)
		}
	}
	if len(store.snaps) != 2 {
		t.Fatalf("%d snapshots after 10 events every 4, want 2", len(store.snaps))
	}
	if got := store.snaps[1].Cursor.Next(); got != 8 {
		t.Fatalf("second snapshot covers through next=%d, want 8", got)
	}
	// Restoring the snapshot and replaying from its cursor reproduces the daemon.
	d2 := &sumDaemon{}
	h2, err := RestoreHost(store.snaps[1], d2, HostConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for s := uint64(8); s < 10; s++ {
		if _, err := h2.Deliver(ev(s)); err != nil {
			t.Fatal(err)
		}
	}
	if d2.total != d.total || d2.n != d.n {
		t.Fatalf("restored+replayed = (%d,%d), want (%d,%d)", d2.total, d2.n, d.total, d.n)
	}
}

// Release note "DashMap entry guard held across registry I/O": no table or
// host lock is held while daemon code or snapshot I/O runs.
func TestEntryGuardNotHeldAcrossDaemonCodeOrSnapshotIO(t *testing.T) {
	hosts := NewHosts()
	store := &recordingStore{}
	d := &sumDaemon{}
	var h *Host
	var checks int
	d.onProcess = func(Event) {
		checks++
		if !hosts.mu.TryLock() {
			t.Error("Hosts table lock held while Process runs")
		} else {
			hosts.mu.Unlock()
		}
		// Daemon code may call back into its host and the table.
		_ = h.Cursor()
		if _, err := hosts.Get("d"); err != nil {
			t.Errorf("callback Get: %v", err)
		}
	}
	d.onSnap = func() {
		checks++
		if !hosts.mu.TryLock() {
			t.Error("Hosts table lock held while Snapshot runs")
		} else {
			hosts.mu.Unlock()
		}
	}
	store.check = func() {
		checks++
		if !h.exec.TryLock() {
			t.Error("execution lock held during snapshot I/O")
		} else {
			h.exec.Unlock()
		}
		if !hosts.mu.TryLock() {
			t.Error("Hosts table lock held during snapshot I/O")
		} else {
			hosts.mu.Unlock()
		}
	}
	h = NewHost("d", "sum", nil, d, CursorAt(0), HostConfig{SnapshotEvery: 2, Store: store})
	if err := hosts.Add(h); err != nil {
		t.Fatal(err)
	}
	for s := uint64(0); s < 4; s++ {
		if _, err := hosts.Deliver("d", ev(s)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if checks != 4+3+3 {
		t.Fatalf("ran %d checks, want 10", checks)
	}
}

// Two racing snapshot starts each call MeshDaemon.Snapshot (documented:
// non-idempotent daemons single-flight themselves).
func TestTwoRacingSnapshotStartsCallSnapshotTwice(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	d := &sumDaemon{}
	first := true
	d.onSnap = func() {
		if first {
			first = false
			close(started)
			<-release
		}
	}
	h := NewHost("d", "sum", nil, d, CursorAt(0), HostConfig{})
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(1)
	go func() { defer wg.Done(); _, err := h.Snapshot(); errs <- err }()
	<-started
	wg.Add(1)
	go func() { defer wg.Done(); _, err := h.Snapshot(); errs <- err }()
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if d.snaps != 2 || h.SnapshotsTaken() != 2 {
		t.Fatalf("daemon Snapshot called %d times (host counted %d), want 2", d.snaps, h.SnapshotsTaken())
	}
}

func TestFenceRefusesUntilUnfenced(t *testing.T) {
	h := NewHost("d", "sum", nil, &sumDaemon{}, CursorAt(0), HostConfig{})
	if c := h.Fence(); c.Next() != 0 {
		t.Fatalf("fenced at %d", c.Next())
	}
	if _, err := h.Deliver(ev(0)); !errors.Is(err, ErrFenced) {
		t.Fatalf("got %v, want ErrFenced", err)
	}
	h.Unfence()
	if _, err := h.Deliver(ev(0)); err != nil {
		t.Fatal(err)
	}
}

func TestHostsMovedAndNotFound(t *testing.T) {
	hosts := NewHosts()
	h := NewHost("d", "sum", nil, &sumDaemon{}, CursorAt(0), HostConfig{})
	if err := hosts.Add(h); err != nil {
		t.Fatal(err)
	}
	if err := hosts.Add(h); !errors.Is(err, ErrExists) {
		t.Fatalf("double add: %v", err)
	}
	hosts.MarkMoved("d", "node-2")
	var me *MovedError
	if _, err := hosts.Deliver("d", ev(0)); !errors.As(err, &me) || me.Node != "node-2" {
		t.Fatalf("got %v, want MovedError to node-2", err)
	}
	if _, err := hosts.Get("x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
}

func TestCaptureRecordsEventsAfterSnapshot(t *testing.T) {
	d := &sumDaemon{}
	h := NewHost("d", "sum", nil, d, CursorAt(0), HostConfig{})
	for s := uint64(0); s < 3; s++ {
		_, _ = h.Deliver(ev(s))
	}
	snap, c, err := h.BeginCapture()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.BeginCapture(); !errors.Is(err, ErrCapturing) {
		t.Fatalf("second capture: %v", err)
	}
	for s := uint64(3); s < 6; s++ {
		_, _ = h.Deliver(ev(s))
	}
	got := c.Drain()
	if snap.Cursor.Next() != 3 || len(got) != 3 || got[0].Seq != 3 || got[2].Seq != 5 {
		t.Fatalf("snapshot at %d, captured %v", snap.Cursor.Next(), got)
	}
	h.EndCapture()
	_, _ = h.Deliver(ev(6))
	if c.Len() != 0 {
		t.Fatal("captured after EndCapture")
	}
}

func TestKindsRegistry(t *testing.T) {
	k := NewKinds()
	f := func(name string, _ []byte) (MeshDaemon, error) { return &sumDaemon{}, nil }
	if err := k.Register("sum", f); err != nil {
		t.Fatal(err)
	}
	if err := k.Register("sum", f); err == nil {
		t.Fatal("duplicate kind accepted")
	}
	if _, err := k.New("nope", "x", nil); !errors.Is(err, ErrUnknownKind) {
		t.Fatalf("got %v, want ErrUnknownKind", err)
	}
	if d, err := k.New("sum", "x", nil); err != nil || d == nil {
		t.Fatalf("New: %v", err)
	}
	if got := k.List(); len(got) != 1 || got[0] != "sum" {
		t.Fatalf("List = %v", got)
	}
}

func TestSnapshotEncodeDecodeRoundTrip(t *testing.T) {
	cases := []*Snapshot{
		{Daemon: "d", Kind: "counter", Config: []byte(`{"a":1}`), Cursor: CursorAt(42), State: []byte("state")},
		{Daemon: "d", Kind: "k", Cursor: Cursor{next: math.MaxUint64, exhausted: true}, State: []byte{}},
		{Daemon: "stateless", Kind: "k", Cursor: CursorAt(7)},
	}
	for _, s := range cases {
		got, err := DecodeSnapshot(s.Encode())
		if err != nil {
			t.Fatalf("decode %+v: %v", s, err)
		}
		if got.Daemon != s.Daemon || got.Kind != s.Kind || !bytes.Equal(got.Config, s.Config) ||
			got.Cursor != s.Cursor || !bytes.Equal(got.State, s.State) || (got.State == nil) != (s.State == nil) {
			t.Fatalf("round trip %+v -> %+v", s, got)
		}
	}
	if _, err := DecodeSnapshot([]byte{9}); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("bad version: %v", err)
	}
}

func FuzzDecodeSnapshot(f *testing.F) {
	f.Add((&Snapshot{Daemon: "d", Kind: "counter", Config: []byte("{}"), Cursor: CursorAt(3), State: []byte("xy")}).Encode())
	f.Add((&Snapshot{Daemon: "d", Kind: "k", Cursor: Cursor{next: math.MaxUint64, exhausted: true}}).Encode())
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSnapshot(b)
		if err != nil {
			return
		}
		again, err := DecodeSnapshot(s.Encode())
		if err != nil {
			t.Fatalf("re-decode of a decoded snapshot failed: %v", err)
		}
		if again.Cursor != s.Cursor || !bytes.Equal(again.State, s.State) || again.Daemon != s.Daemon {
			t.Fatalf("re-encode changed the snapshot")
		}
	})
}

type memLog struct {
	mu      sync.Mutex
	evs     []Event
	changed chan struct{}
}

func (l *memLog) append(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.Seq = uint64(len(l.evs))
	l.evs = append(l.evs, e)
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *memLog) Read(from uint64, limit int) ([]Event, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if from >= uint64(len(l.evs)) {
		return nil, nil
	}
	return append([]Event(nil), l.evs[from:min(uint64(len(l.evs)), from+uint64(limit))]...), nil
}

func (l *memLog) Wait(ctx context.Context, from uint64) error {
	for {
		l.mu.Lock()
		if from < uint64(len(l.evs)) {
			l.mu.Unlock()
			return nil
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func TestFeedAppliesLogInOrderAndTracksThroughSeq(t *testing.T) {
	log := &memLog{changed: make(chan struct{})}
	for i := 0; i < 10; i++ {
		log.append(Event{Payload: []byte("ab")})
	}
	d := &sumDaemon{}
	h := NewHost("d", "sum", nil, d, CursorAt(0), HostConfig{SnapshotEvery: 5})
	ctx, cancel := context.WithCancel(context.Background())
	emitted := make(chan uint64, 100)
	done := make(chan error, 1)
	go func() {
		done <- Feed(ctx, h, log, 3, func(seq uint64, _ [][]byte) { emitted <- seq })
	}()
	for want := uint64(0); want < 10; want++ {
		if got := <-emitted; got != want {
			t.Fatalf("emitted seq %d, want %d", got, want)
		}
	}
	log.append(Event{Payload: []byte("c")}) // a live append wakes the feed
	if got := <-emitted; got != 10 {
		t.Fatalf("live seq %d, want 10", got)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("feed returned %v", err)
	}
	if d.total != 21 || h.Cursor().Next() != 11 || h.SnapshotsTaken() != 2 {
		t.Fatalf("total %d cursor %d snapshots %d", d.total, h.Cursor().Next(), h.SnapshotsTaken())
	}
}

func TestSparseHostAcceptsGapsButNotDuplicates(t *testing.T) {
	h := NewHost("d", "sum", nil, &sumDaemon{}, CursorAt(0), HostConfig{Sparse: true})
	for _, s := range []uint64{3, 7, 8} {
		if _, err := h.Deliver(ev(s)); err != nil {
			t.Fatalf("sparse deliver %d: %v", s, err)
		}
	}
	if _, err := h.Deliver(ev(5)); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("seq 5 after 8: %v, want ErrDuplicate", err)
	}
	if h.Cursor().Next() != 9 {
		t.Fatalf("cursor %d", h.Cursor().Next())
	}
}

func TestCursorThroughSeq(t *testing.T) {
	if _, ok := CursorAt(0).Through(); ok {
		t.Fatal("fresh cursor reports a through-seq")
	}
	if s, ok := CursorAt(10).Through(); !ok || s != 9 {
		t.Fatalf("CursorAt(10).Through() = %d, %v", s, ok)
	}
	c := CursorAt(math.MaxUint64)
	c.Advance(math.MaxUint64)
	if s, ok := c.Through(); !ok || s != math.MaxUint64 {
		t.Fatalf("exhausted Through() = %d, %v", s, ok)
	}
}
