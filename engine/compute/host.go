package compute

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// SnapshotStore persists periodic snapshots. Hosts call it with no lock
// held, so an implementation may block on I/O or call back into the host.
// For the same reason two snapshots of one host can reach SaveSnapshot out
// of order (the later cursor first); a store must keep the snapshot with
// the higher cursor rather than the last one saved, as engine/snapshot.Store
// does with its per-entity high-water mark.
type SnapshotStore interface {
	SaveSnapshot(s *Snapshot) error
}

// HostConfig tunes a host.
type HostConfig struct {
	// SnapshotEvery takes a snapshot after every N applied events of a
	// stateful daemon and hands it to Store. 0 disables periodic snapshots.
	SnapshotEvery uint64
	// Store receives periodic snapshots; nil keeps only the latest in memory
	// (see Host.LastSnapshot).
	Store SnapshotStore
	// Sparse accepts any seq after the cursor, for daemons fed a subset of
	// a shard's events (replica-group members). Already-applied seqs are
	// still refused, so nothing is applied twice or out of order.
	Sparse bool
}

// Host owns one daemon, applies events to it in seq order and tracks the
// cursor its state covers. All methods are safe for concurrent use.
type Host struct {
	id     string
	kind   string
	config []byte
	cfg    HostConfig

	// exec serializes calls into the daemon. It guards daemon, cursor,
	// sinceSnap, fenced and capture, and nothing else; it is never held
	// while snapshot I/O runs.
	exec      sync.Mutex
	daemon    MeshDaemon
	cursor    Cursor
	sinceSnap uint64
	fenced    bool
	capture   *Capture

	// Lock-free mirrors for readers (daemon code may call these).
	next      atomic.Uint64
	exhausted atomic.Bool
	processed atomic.Uint64
	snapshots atomic.Uint64
	last      atomic.Pointer[Snapshot]
	snapErr   atomic.Pointer[error]
}

// NewHost wraps a fresh daemon whose state covers nothing before start.
func NewHost(id, kind string, config []byte, d MeshDaemon, start Cursor, cfg HostConfig) *Host {
	h := &Host{id: id, kind: kind, config: config, cfg: cfg, daemon: d}
	h.setCursor(start)
	return h
}

// RestoreHost builds a host whose daemon d is restored from s. d must be a
// fresh daemon of s.Kind; the host is not shared yet, so no lock is needed.
func RestoreHost(s *Snapshot, d MeshDaemon, cfg HostConfig) (*Host, error) {
	if s.State != nil || d.Stateful() {
		if err := d.Restore(s.State); err != nil {
			return nil, fmt.Errorf("compute: restore daemon %q: %w", s.Daemon, err)
		}
	}
	h := &Host{id: s.Daemon, kind: s.Kind, config: s.Config, cfg: cfg, daemon: d}
	h.setCursor(s.Cursor)
	h.last.Store(s)
	return h, nil
}

// ID is the daemon id this host runs.
func (h *Host) ID() string { return h.id }

// Kind is the daemon's kind.
func (h *Host) Kind() string { return h.kind }

// Config is the daemon's declared config.
func (h *Host) Config() []byte { return h.config }

// Cursor returns the next seq the daemon expects. It reads atomics only.
func (h *Host) Cursor() Cursor {
	return Cursor{next: h.next.Load(), exhausted: h.exhausted.Load()}
}

// Processed counts events applied by this host.
func (h *Host) Processed() uint64 { return h.processed.Load() }

// SnapshotsTaken counts snapshots taken by this host (periodic and explicit).
func (h *Host) SnapshotsTaken() uint64 { return h.snapshots.Load() }

// LastSnapshot is the most recent snapshot this host took or was restored
// from, or nil.
func (h *Host) LastSnapshot() *Snapshot { return h.last.Load() }

// SnapshotErr is the last periodic snapshot or store error, or nil.
func (h *Host) SnapshotErr() error {
	if p := h.snapErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (h *Host) setCursor(c Cursor) {
	h.cursor = c
	h.next.Store(c.next)
	h.exhausted.Store(c.exhausted)
}

// Deliver applies ev if it is the next expected event and returns the
// daemon's outputs. It returns ErrDuplicate for an event already applied,
// ErrGap for one past the cursor, ErrFenced while fenced, and a
// *ProcessError when the daemon fails (the event is then not applied).
func (h *Host) Deliver(ev Event) ([][]byte, error) {
	h.exec.Lock()
	if h.fenced {
		h.exec.Unlock()
		return nil, ErrFenced
	}
	if !h.cursor.Accepts(ev.Seq) && (!h.cfg.Sparse || h.cursor.Stale(ev.Seq)) {
		stale := h.cursor.Stale(ev.Seq)
		next := h.cursor.next
		h.exec.Unlock()
		if stale {
			return nil, fmt.Errorf("%w: daemon %q seq %d (next %d)", ErrDuplicate, h.id, ev.Seq, next)
		}
		return nil, fmt.Errorf("%w: daemon %q seq %d (next %d)", ErrGap, h.id, ev.Seq, next)
	}
	out, err := h.daemon.Process(ev)
	if err != nil {
		h.exec.Unlock()
		return nil, &ProcessError{Daemon: h.id, Seq: ev.Seq, Err: err}
	}
	c := h.cursor
	c.Advance(ev.Seq)
	h.setCursor(c)
	h.processed.Add(1)
	if h.capture != nil {
		h.capture.add(ev)
	}
	var snap *Snapshot
	if h.cfg.SnapshotEvery > 0 && h.daemon.Stateful() {
		h.sinceSnap++
		if h.sinceSnap >= h.cfg.SnapshotEvery {
			var serr error
			if snap, serr = h.snapshotLocked(); serr != nil {
				h.recordSnapErr(serr) // retried after the next event
			} else {
				h.sinceSnap = 0
			}
		}
	}
	h.exec.Unlock()
	if snap != nil {
		h.save(snap)
	}
	return out, nil
}

// Snapshot takes a snapshot now and hands it to the store (with no lock
// held). Two racing calls take two snapshots; see the package doc.
func (h *Host) Snapshot() (*Snapshot, error) {
	h.exec.Lock()
	s, err := h.snapshotLocked()
	if err == nil {
		h.sinceSnap = 0
	}
	h.exec.Unlock()
	if err != nil {
		return nil, err
	}
	h.save(s)
	return s, nil
}

func (h *Host) snapshotLocked() (*Snapshot, error) {
	s := &Snapshot{Daemon: h.id, Kind: h.kind, Config: h.config, Cursor: h.cursor}
	if h.daemon.Stateful() {
		state, err := h.daemon.Snapshot()
		if err != nil {
			return nil, fmt.Errorf("compute: snapshot daemon %q: %w", h.id, err)
		}
		if state == nil {
			state = []byte{}
		}
		s.State = state
	}
	h.snapshots.Add(1)
	h.last.Store(s)
	return s, nil
}

func (h *Host) save(s *Snapshot) {
	if h.cfg.Store == nil {
		return
	}
	if err := h.cfg.Store.SaveSnapshot(s); err != nil {
		h.recordSnapErr(fmt.Errorf("compute: store snapshot of %q: %w", h.id, err))
	}
}

func (h *Host) recordSnapErr(err error) { h.snapErr.Store(&err) }

// Restore replaces the daemon's state and cursor with s (a standby sync).
func (h *Host) Restore(s *Snapshot) error {
	h.exec.Lock()
	defer h.exec.Unlock()
	if s.State != nil || h.daemon.Stateful() {
		if err := h.daemon.Restore(s.State); err != nil {
			return fmt.Errorf("compute: restore daemon %q: %w", h.id, err)
		}
	}
	h.setCursor(s.Cursor)
	h.sinceSnap = 0
	h.last.Store(s)
	return nil
}

// BeginCapture takes a snapshot and, under the same execution-lock hold,
// starts recording every event applied after it, so Snapshot plus the
// captured events reproduce the daemon exactly. Only one capture runs at a
// time (ErrCapturing).
func (h *Host) BeginCapture() (*Snapshot, *Capture, error) {
	h.exec.Lock()
	if h.capture != nil {
		h.exec.Unlock()
		return nil, nil, fmt.Errorf("%w: daemon %q", ErrCapturing, h.id)
	}
	s, err := h.snapshotLocked()
	if err != nil {
		h.exec.Unlock()
		return nil, nil, err
	}
	c := &Capture{}
	h.capture = c
	h.exec.Unlock()
	return s, c, nil
}

// EndCapture stops recording. Events already captured stay in the Capture.
func (h *Host) EndCapture() {
	h.exec.Lock()
	h.capture = nil
	h.exec.Unlock()
}

// Fence stops the host from applying events (ErrFenced) and returns the
// cursor it stopped at. It waits for an in-flight Process to return.
func (h *Host) Fence() Cursor {
	h.exec.Lock()
	defer h.exec.Unlock()
	h.fenced = true
	return h.cursor
}

// Unfence lets the host apply events again.
func (h *Host) Unfence() {
	h.exec.Lock()
	h.fenced = false
	h.exec.Unlock()
}

// Fenced reports whether the host is fenced.
func (h *Host) Fenced() bool {
	h.exec.Lock()
	defer h.exec.Unlock()
	return h.fenced
}

// Capture records the events a host applied after BeginCapture. Its lock
// is held only to append or take events, never while daemon code runs.
type Capture struct {
	mu     sync.Mutex
	events []Event
}

func (c *Capture) add(ev Event) {
	c.mu.Lock()
	c.events = append(c.events, ev)
	c.mu.Unlock()
}

// Drain takes the events captured so far, oldest first.
func (c *Capture) Drain() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.events
	c.events = nil
	return out
}

// Len is the number of captured events not yet drained.
func (c *Capture) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.events)
}
