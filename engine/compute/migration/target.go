package migration

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/purplerain/mesh-operator/engine/compute"
)

// Target is a node's target-side migration state: it reassembles snapshot
// chunks, restores the daemon, replays buffered events strictly in seq
// order and activates the daemon into the node's Hosts table.
type Target struct {
	kinds *compute.Kinds // nil: this node runs no compute runtime
	hosts *compute.Hosts
	cfg   compute.HostConfig
	ready atomic.Bool

	mu      sync.Mutex
	inbound map[string]*inbound
}

// inbound is one daemon arriving on this node. Its lock guards the fields
// below and is never held while daemon code runs: drain takes a run of
// events out, unlocks, delivers, and relocks to record the result.
type inbound struct {
	mu       sync.Mutex
	source   NodeID
	phase    Phase
	chunks   [][]byte
	total    uint32
	host     *compute.Host
	pending  map[uint64]compute.Event
	draining bool
	// activated is set once the host is in the Hosts table.
	activated bool
}

// NewTarget returns a target handler that builds daemons from kinds (nil
// for a node without a compute runtime) into hosts. It starts not ready:
// call SetReady once the node's runtime is started.
func NewTarget(kinds *compute.Kinds, hosts *compute.Hosts, cfg compute.HostConfig) *Target {
	return &Target{kinds: kinds, hosts: hosts, cfg: cfg, inbound: make(map[string]*inbound)}
}

// SetReady marks the runtime started (true) or not (false). A target that
// is not ready answers chunks with the retriable ReasonNotReady.
func (t *Target) SetReady(ready bool) { t.ready.Store(ready) }

// Phase returns the phase of an inbound migration, if any.
func (t *Target) Phase(daemon string) (Phase, bool) {
	in := t.get(daemon)
	if in == nil {
		return 0, false
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.phase, true
}

// Pending returns the seqs waiting in an inbound migration's replay buffer.
func (t *Target) Pending(daemon string) []uint64 {
	in := t.get(daemon)
	if in == nil {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make([]uint64, 0, len(in.pending))
	for s := range in.pending {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Cursor returns the cursor of the daemon restored by an inbound migration.
func (t *Target) Cursor(daemon string) (compute.Cursor, bool) {
	in := t.get(daemon)
	if in == nil {
		return compute.Cursor{}, false
	}
	in.mu.Lock()
	h := in.host
	in.mu.Unlock()
	if h == nil {
		return compute.Cursor{}, false
	}
	return h.Cursor(), true
}

// sourceOf returns the node driving the inbound migration of daemon.
func (t *Target) sourceOf(daemon string) (NodeID, bool) {
	in := t.get(daemon)
	if in == nil {
		return "", false
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.source, true
}

func (t *Target) get(daemon string) *inbound {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.inbound[daemon]
}

func failed(daemon string, r Reason, format string, args ...any) *Failed {
	return &Failed{Daemon: daemon, Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// HandleChunk stores one snapshot chunk. Chunk 0 starts a fresh inbound
// migration (replacing a stale one from an earlier attempt). The reply to
// the last chunk is RestoreComplete or Failed; other chunks get nil.
func (t *Target) HandleChunk(from NodeID, c *SnapshotChunk) Message {
	if t.kinds == nil {
		return failed(c.Daemon, ReasonComputeNotSupported, "node runs no compute runtime")
	}
	if !t.ready.Load() {
		return failed(c.Daemon, ReasonNotReady, "compute runtime not started")
	}
	var in *inbound
	if c.Index == 0 {
		if _, err := t.hosts.Get(c.Daemon); err == nil && !t.ownedByStaleInbound(c.Daemon, from) {
			return failed(c.Daemon, ReasonAlreadyMigrating, "daemon is already hosted here")
		}
		t.discard(c.Daemon)
		in = &inbound{source: from, phase: PhaseTransfer, total: c.Total, pending: make(map[uint64]compute.Event)}
		t.mu.Lock()
		t.inbound[c.Daemon] = in
		t.mu.Unlock()
	} else if in = t.get(c.Daemon); in == nil {
		return failed(c.Daemon, ReasonStateFailed, "chunk %d without chunk 0", c.Index)
	}
	in.mu.Lock()
	if in.phase != PhaseTransfer {
		ph := in.phase
		in.mu.Unlock()
		if ph == PhaseRestore || ph == PhaseReplay {
			// A resent last chunk after a lost reply: answer idempotently.
			if cur, ok := t.Cursor(c.Daemon); ok && c.Index == c.Total-1 {
				return &RestoreComplete{Daemon: c.Daemon, Next: cur.Next()}
			}
		}
		return failed(c.Daemon, ReasonStateFailed, "chunk in phase %s", ph)
	}
	if c.Total != in.total || int(c.Index) != len(in.chunks) {
		if int(c.Index) < len(in.chunks) { // a resend after a lost reply
			in.mu.Unlock()
			return nil
		}
		in.mu.Unlock()
		return failed(c.Daemon, ReasonStateFailed, "chunk %d/%d out of order (have %d/%d)", c.Index, c.Total, len(in.chunks), in.total)
	}
	in.chunks = append(in.chunks, append([]byte(nil), c.Data...))
	if uint32(len(in.chunks)) < in.total {
		in.mu.Unlock()
		return nil
	}
	in.phase = PhaseRestore
	var size int
	for _, ch := range in.chunks {
		size += len(ch)
	}
	buf := make([]byte, 0, size)
	for _, ch := range in.chunks {
		buf = append(buf, ch...)
	}
	in.chunks = nil
	in.mu.Unlock()

	// Build and restore with no lock held: this runs daemon code.
	h, reason, err := t.restore(c.Daemon, buf)
	if err != nil {
		t.drop(c.Daemon, in)
		return failed(c.Daemon, reason, "%v", err)
	}
	in.mu.Lock()
	in.host = h
	in.phase = PhaseReplay
	in.mu.Unlock()
	return &RestoreComplete{Daemon: c.Daemon, Next: h.Cursor().Next()}
}

func (t *Target) restore(daemon string, buf []byte) (*compute.Host, Reason, error) {
	snap, err := compute.DecodeSnapshot(buf)
	if err != nil {
		return nil, ReasonStateFailed, err
	}
	if snap.Daemon != daemon {
		return nil, ReasonStateFailed, fmt.Errorf("snapshot is for daemon %q", snap.Daemon)
	}
	d, err := t.kinds.New(snap.Kind, snap.Daemon, snap.Config)
	if errors.Is(err, compute.ErrUnknownKind) {
		return nil, ReasonFactoryNotFound, err
	}
	if err != nil {
		return nil, ReasonStateFailed, err
	}
	h, err := compute.RestoreHost(snap, d, t.cfg)
	if err != nil {
		return nil, ReasonStateFailed, err
	}
	return h, 0, nil
}

// HandleEvents adds buffered events to the pending replay set and drains
// it. The reply is ReplayComplete with the cursor reached, or Failed when a
// delivery failed (the undelivered tail stays pending for the next drain).
func (t *Target) HandleEvents(m *BufferedEvents) Message {
	in := t.get(m.Daemon)
	if in == nil {
		return failed(m.Daemon, ReasonStateFailed, "no inbound migration")
	}
	in.mu.Lock()
	if in.phase != PhaseReplay || in.host == nil {
		ph := in.phase
		in.mu.Unlock()
		if ph == PhaseCutover || ph == PhaseComplete {
			// A resend after cutover must not reopen replay.
			return t.replayReply(m.Daemon, in)
		}
		return failed(m.Daemon, ReasonStateFailed, "events in phase %s", ph)
	}
	in.mu.Unlock()
	if err := in.drainWith(m.Events); err != nil {
		return failed(m.Daemon, ReasonStateFailed, "replay: %v", err)
	}
	return t.replayReply(m.Daemon, in)
}

func (t *Target) replayReply(daemon string, in *inbound) Message {
	in.mu.Lock()
	h := in.host
	in.mu.Unlock()
	c := h.Cursor()
	return &ReplayComplete{Daemon: daemon, Next: c.Next(), Exhausted: c.Exhausted()}
}

// HandleCutover drains what is pending and checks that the daemon reached
// the source's fenced cursor; only then does the migration enter Cutover.
func (t *Target) HandleCutover(m *Cutover) Message {
	in := t.get(m.Daemon)
	if in == nil {
		return failed(m.Daemon, ReasonStateFailed, "no inbound migration")
	}
	in.mu.Lock()
	ph, h := in.phase, in.host
	in.mu.Unlock()
	if h == nil || (ph != PhaseReplay && ph != PhaseCutover) {
		return failed(m.Daemon, ReasonStateFailed, "cutover in phase %s", ph)
	}
	if err := in.drain(); err != nil {
		return failed(m.Daemon, ReasonStateFailed, "replay before cutover: %v", err)
	}
	c := h.Cursor()
	if c.Next() != m.Next || c.Exhausted() != m.Exhausted {
		return failed(m.Daemon, ReasonStateFailed, "target at seq %d, source fenced at %d", c.Next(), m.Next)
	}
	in.mu.Lock()
	in.phase = PhaseCutover
	in.mu.Unlock()
	return &ReplayComplete{Daemon: m.Daemon, Next: c.Next(), Exhausted: c.Exhausted()}
}

// HandleActivate adds the daemon to the node's Hosts table. It is
// idempotent: a resend after a lost ack gets the same ack.
func (t *Target) HandleActivate(m *Activate) Message {
	in := t.get(m.Daemon)
	if in == nil {
		return failed(m.Daemon, ReasonStateFailed, "no inbound migration")
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	switch {
	case in.phase == PhaseCutover:
		if err := t.hosts.Add(in.host); err != nil {
			return failed(m.Daemon, ReasonAlreadyMigrating, "%v", err)
		}
		in.activated = true
		in.phase = PhaseComplete
	case in.phase != PhaseComplete:
		return failed(m.Daemon, ReasonStateFailed, "activate in phase %s", in.phase)
	}
	c := in.host.Cursor()
	return &ActivateAck{Daemon: m.Daemon, Next: c.Next(), Exhausted: c.Exhausted()}
}

// HandleCleanup forgets a completed migration record.
func (t *Target) HandleCleanup(m *Cleanup) Message {
	t.mu.Lock()
	defer t.mu.Unlock()
	if in := t.inbound[m.Daemon]; in != nil {
		in.mu.Lock()
		done := in.phase == PhaseComplete
		in.mu.Unlock()
		if done {
			delete(t.inbound, m.Daemon)
		}
	}
	return nil
}

// HandleAbort discards an inbound migration, including a host it already
// activated (the source is authoritative after an abort).
func (t *Target) HandleAbort(m *Failed) Message {
	t.discard(m.Daemon)
	return nil
}

// ownedByStaleInbound reports whether the hosted daemon was put there by a
// migration from the same source whose Cleanup never arrived: the source
// retrying after a lost ActivateAck (it aborted, so it is authoritative and
// this copy is stale) may replace it. Any other sender is refused.
func (t *Target) ownedByStaleInbound(daemon string, from NodeID) bool {
	in := t.get(daemon)
	if in == nil {
		return false
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.activated && in.source == from
}

func (t *Target) discard(daemon string) {
	t.mu.Lock()
	in := t.inbound[daemon]
	delete(t.inbound, daemon)
	t.mu.Unlock()
	if in == nil {
		return
	}
	in.mu.Lock()
	h, activated := in.host, in.activated
	in.mu.Unlock()
	if activated {
		if cur, err := t.hosts.Get(daemon); err == nil && cur == h {
			t.hosts.Remove(daemon)
		}
	}
}

func (t *Target) drop(daemon string, in *inbound) {
	t.mu.Lock()
	if t.inbound[daemon] == in {
		delete(t.inbound, daemon)
	}
	t.mu.Unlock()
}

// drain replays pending events strictly in seq order from the host's
// cursor. It single-flights: a caller that finds a drain running leaves its
// events to that drain. Stale events (already applied) are dropped. When a
// delivery fails, the delivered prefix stays applied (the cursor moved past
// it) and the undelivered tail goes back into pending, so the next drain
// resumes at the failed event and never redelivers the prefix.
func (in *inbound) drain() error { return in.drainWith(nil) }

// drainWith adds batch to the pending set and drains. A batch that
// continues the cursor exactly while nothing else is pending is delivered
// as the run directly, without passing through the pending set.
func (in *inbound) drainWith(batch []compute.Event) error {
	in.mu.Lock()
	h := in.host
	var run []compute.Event
	if !in.draining && len(in.pending) == 0 && continues(h.Cursor(), batch) {
		run = batch
	} else {
		for _, ev := range batch {
			in.pending[ev.Seq] = ev
		}
	}
	if in.draining {
		in.mu.Unlock()
		return nil
	}
	in.draining = true
	for {
		if run == nil {
			cur := h.Cursor()
			for seq := range in.pending {
				if cur.Stale(seq) {
					delete(in.pending, seq)
				}
			}
			run = in.takeRun(cur)
		}
		if len(run) == 0 {
			in.draining = false
			in.mu.Unlock()
			return nil
		}
		in.mu.Unlock()
		delivered, err := replay(h, run)
		in.mu.Lock()
		if err != nil {
			for _, ev := range run[delivered:] {
				in.pending[ev.Seq] = ev
			}
			in.draining = false
			in.mu.Unlock()
			return err
		}
		run = nil
	}
}

// continues reports whether batch is the dense run of seqs starting at c.
func continues(c compute.Cursor, batch []compute.Event) bool {
	if len(batch) == 0 || !c.Accepts(batch[0].Seq) {
		return false
	}
	for i := 1; i < len(batch); i++ {
		if batch[i-1].Seq == ^uint64(0) || batch[i].Seq != batch[i-1].Seq+1 {
			return false
		}
	}
	return true
}

// takeRun removes and returns the contiguous run of pending events that
// starts at the cursor. The next seq saturates at MaxUint64.
func (in *inbound) takeRun(cur compute.Cursor) []compute.Event {
	if cur.Exhausted() {
		return nil
	}
	var run []compute.Event
	next := cur.Next()
	for {
		ev, ok := in.pending[next]
		if !ok {
			return run
		}
		delete(in.pending, next)
		run = append(run, ev)
		if next == ^uint64(0) {
			return run
		}
		next++
	}
}

// replay applies run to h and returns how many events it applied. Outputs
// are discarded: the source already emitted them.
func replay(h *compute.Host, run []compute.Event) (int, error) {
	for i, ev := range run {
		if _, err := h.Deliver(ev); err != nil {
			if errors.Is(err, compute.ErrDuplicate) {
				continue
			}
			return i, err
		}
	}
	return len(run), nil
}
