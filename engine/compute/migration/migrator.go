package migration

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/purplerain/mesh-operator/engine/compute"
)

// Config tunes a Migrator. Zero fields take the defaults.
type Config struct {
	// ChunkSize is the snapshot chunk payload size; at most MaxChunk.
	ChunkSize int
	// BatchBytes bounds one BufferedEvents message; at most MaxEventsBytes.
	BatchBytes int
	// CatchUpRounds is how many replay rounds run while the source keeps
	// processing before it is fenced. Default 4.
	CatchUpRounds int
	// CatchUpBacklog fences early once a round leaves at most this many
	// captured events. Default 64.
	CatchUpBacklog int
	// NotReadyRetries is how many times a NotReady target is retried
	// before the migration fails with ReasonNotReadyTimeout. Default 5.
	NotReadyRetries int
	// ReplayRetries is how many times a failed replay delivery on the
	// target is retried (the target resumes from its undelivered tail).
	// Default 3.
	ReplayRetries int
	// Backoff returns the pause before NotReady retry n (from 1). Default
	// 20ms·n. Tests inject a zero backoff.
	Backoff func(n int) time.Duration
	// OnPhase, if set, is called as each phase starts.
	OnPhase func(daemon string, p Phase)
}

func (c Config) withDefaults() Config {
	if c.ChunkSize <= 0 || c.ChunkSize > MaxChunk {
		c.ChunkSize = MaxChunk
	}
	if c.BatchBytes <= 0 || c.BatchBytes > MaxEventsBytes-1024 {
		c.BatchBytes = 1 << 20
	}
	if c.CatchUpRounds <= 0 {
		c.CatchUpRounds = 4
	}
	if c.CatchUpBacklog <= 0 {
		c.CatchUpBacklog = 64
	}
	if c.NotReadyRetries <= 0 {
		c.NotReadyRetries = 5
	}
	if c.ReplayRetries <= 0 {
		c.ReplayRetries = 3
	}
	if c.Backoff == nil {
		c.Backoff = func(n int) time.Duration { return time.Duration(n) * 20 * time.Millisecond }
	}
	return c
}

// Migrator runs migrations of this node's daemons to other nodes. It is
// the orchestrator and the source side in one: the source node drives the
// six phases and talks to the target through a Transport.
//
// Until the target acknowledges activation the source stays authoritative:
// it keeps processing (only the Cutover phase fences it, briefly), and an
// abort in any phase ends the capture, unfences it and tells the target to
// discard its copy. Only after ActivateAck does the source drop the daemon
// and answer with a *compute.MovedError naming the target.
type Migrator struct {
	self      NodeID
	hosts     *compute.Hosts
	transport Transport
	cfg       Config

	mu       sync.Mutex
	inFlight map[string]Phase
}

// NewMigrator returns a migrator for the daemons in hosts on node self.
func NewMigrator(self NodeID, hosts *compute.Hosts, transport Transport, cfg Config) *Migrator {
	return &Migrator{self: self, hosts: hosts, transport: transport, cfg: cfg.withDefaults(), inFlight: make(map[string]Phase)}
}

// Phase returns the phase of an in-flight migration of daemon.
func (m *Migrator) Phase(daemon string) (Phase, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.inFlight[daemon]
	return p, ok
}

// Result describes a completed migration.
type Result struct {
	// Cursor is where the target took over: the first seq it applies live.
	Cursor compute.Cursor
	// Replayed counts events replayed on the target.
	Replayed int
	// Chunks is the number of snapshot chunks sent.
	Chunks int
	// CleanupErr is set when the final Cleanup message failed; the
	// migration is complete regardless (the target forgets its record on
	// the next migration of the daemon).
	CleanupErr error
}

// run tracks one migration.
type run struct {
	m        *Migrator
	daemon   string
	target   NodeID
	host     *compute.Host
	capture  *compute.Capture
	fenced   bool
	phase    Phase
	replayed int
}

// Migrate moves daemon to target through the six phases. On failure it
// returns an *Error and the source is authoritative.
func (m *Migrator) Migrate(ctx context.Context, daemon string, target NodeID) (*Result, error) {
	if target == m.self {
		return nil, &Error{Daemon: daemon, Phase: PhaseSnapshot, Reason: ReasonStateFailed, Err: errors.New("target is the source node")}
	}
	h, err := m.hosts.Get(daemon)
	if err != nil {
		return nil, &Error{Daemon: daemon, Phase: PhaseSnapshot, Reason: ReasonStateFailed, Err: err}
	}
	m.mu.Lock()
	if _, busy := m.inFlight[daemon]; busy {
		m.mu.Unlock()
		return nil, &Error{Daemon: daemon, Phase: PhaseSnapshot, Reason: ReasonAlreadyMigrating, Err: errors.New("migration in flight")}
	}
	m.inFlight[daemon] = PhaseSnapshot
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.inFlight, daemon)
		m.mu.Unlock()
	}()

	r := &run{m: m, daemon: daemon, target: target, host: h}
	res, err := r.execute(ctx)
	if err != nil {
		r.abort(ctx, err)
		return nil, err
	}
	return res, nil
}

func (r *run) enter(p Phase) {
	r.phase = p
	r.m.mu.Lock()
	r.m.inFlight[r.daemon] = p
	r.m.mu.Unlock()
	if r.m.cfg.OnPhase != nil {
		r.m.cfg.OnPhase(r.daemon, p)
	}
}

func (r *run) fail(reason Reason, err error) *Error {
	return &Error{Daemon: r.daemon, Phase: r.phase, Reason: reason, Err: err}
}

func (r *run) execute(ctx context.Context) (*Result, error) {
	res := &Result{}

	// Phase 1: snapshot + start capturing, under one execution-lock hold.
	r.enter(PhaseSnapshot)
	snap, capture, err := r.host.BeginCapture()
	if err != nil {
		return nil, r.fail(ReasonStateFailed, err)
	}
	r.capture = capture

	// Phases 2 and 3: transfer the chunks; the reply to the last one is
	// the target's restore result. NotReady restarts the transfer.
	payload := snap.Encode()
	for attempt := 0; ; attempt++ {
		r.enter(PhaseTransfer)
		n, err := r.transfer(ctx, payload)
		res.Chunks = n
		var fe *Error
		if errors.As(err, &fe) && fe.Reason.Retriable() {
			if attempt >= r.m.cfg.NotReadyRetries {
				fe.Reason, fe.Attempts = ReasonNotReadyTimeout, attempt+1
				return nil, fe
			}
			if err := sleep(ctx, r.m.cfg.Backoff(attempt+1)); err != nil {
				return nil, r.fail(ReasonAborted, err)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}

	// Phase 4: replay captured events while the source keeps processing.
	r.enter(PhaseReplay)
	for round := 0; round < r.m.cfg.CatchUpRounds; round++ {
		if err := r.replay(ctx, r.capture.Drain()); err != nil {
			return nil, err
		}
		if r.capture.Len() <= r.m.cfg.CatchUpBacklog {
			break
		}
	}

	// Phase 5: fence the source, replay the rest, confirm the target is at
	// the fenced cursor, activate the target.
	r.enter(PhaseCutover)
	fenced := r.host.Fence()
	r.fenced = true
	if err := r.replay(ctx, r.capture.Drain()); err != nil {
		return nil, err
	}
	reply, err := r.exchange(ctx, &Cutover{Daemon: r.daemon, Next: fenced.Next(), Exhausted: fenced.Exhausted()})
	if err != nil {
		return nil, err
	}
	if rc, ok := reply.(*ReplayComplete); !ok || rc.Next != fenced.Next() || rc.Exhausted != fenced.Exhausted() {
		return nil, r.unexpected(reply)
	}
	reply, err = r.exchange(ctx, &Activate{Daemon: r.daemon})
	if err != nil {
		return nil, err
	}
	if ack, ok := reply.(*ActivateAck); !ok || ack.Next != fenced.Next() || ack.Exhausted != fenced.Exhausted() {
		return nil, r.unexpected(reply)
	}

	// Phase 6: the target is authoritative; release the source's copy.
	r.enter(PhaseComplete)
	r.host.EndCapture()
	r.m.hosts.MarkMoved(r.daemon, string(r.target))
	if _, err := r.exchange(ctx, &Cleanup{Daemon: r.daemon}); err != nil {
		res.CleanupErr = err
	}
	res.Cursor = fenced
	res.Replayed = r.replayed
	return res, nil
}

// transfer sends the snapshot chunks and returns how many it sent.
func (r *run) transfer(ctx context.Context, payload []byte) (int, error) {
	size := r.m.cfg.ChunkSize
	total := max(1, (len(payload)+size-1)/size)
	for i := 0; i < total; i++ {
		if i == total-1 {
			r.enter(PhaseRestore)
		}
		end := min(len(payload), (i+1)*size)
		msg := &SnapshotChunk{Daemon: r.daemon, Index: uint32(i), Total: uint32(total), Data: payload[i*size : end]}
		reply, err := r.exchange(ctx, msg)
		if err != nil {
			return i, err
		}
		if i < total-1 {
			if reply != nil {
				return i, r.unexpected(reply)
			}
			continue
		}
		if _, ok := reply.(*RestoreComplete); !ok {
			return total, r.unexpected(reply)
		}
	}
	return total, nil
}

// replay sends events in batches of at most BatchBytes. A Failed reply
// (a delivery failed on the target) is retried with an empty batch, which
// makes the target resume its pending drain at the failed event.
func (r *run) replay(ctx context.Context, evs []compute.Event) error {
	for len(evs) > 0 {
		n, size := 0, 0
		for n < len(evs) && (n == 0 || size+EncodedEventSize(evs[n]) <= r.m.cfg.BatchBytes) {
			size += EncodedEventSize(evs[n])
			n++
		}
		batch := evs[:n]
		evs = evs[n:]
		if err := r.sendBatch(ctx, batch); err != nil {
			return err
		}
		r.replayed += len(batch)
	}
	return nil
}

func (r *run) sendBatch(ctx context.Context, batch []compute.Event) error {
	msg := &BufferedEvents{Daemon: r.daemon, Events: batch}
	for try := 0; ; try++ {
		reply, err := r.exchangeRaw(ctx, msg)
		if err != nil {
			return r.fail(ReasonTransportFailed, err)
		}
		switch rep := reply.(type) {
		case *ReplayComplete:
			return nil
		case *Failed:
			if rep.Reason != ReasonStateFailed || try >= r.m.cfg.ReplayRetries {
				return r.fail(rep.Reason, errors.New(rep.Detail))
			}
			msg = &BufferedEvents{Daemon: r.daemon} // resume the target's pending drain
		default:
			return r.unexpected(reply)
		}
	}
}

// exchange sends msg and decodes the reply; a Failed reply becomes an *Error.
func (r *run) exchange(ctx context.Context, msg Message) (Message, error) {
	reply, err := r.exchangeRaw(ctx, msg)
	if err != nil {
		return nil, r.fail(ReasonTransportFailed, err)
	}
	if f, ok := reply.(*Failed); ok {
		return nil, &Error{Daemon: r.daemon, Phase: r.phase, Reason: f.Reason, Attempts: int(f.Attempts), Err: errors.New(f.Detail)}
	}
	return reply, nil
}

func (r *run) exchangeRaw(ctx context.Context, msg Message) (Message, error) {
	req, err := Encode(msg)
	if err != nil {
		return nil, err
	}
	raw, err := r.m.transport.Exchange(ctx, r.target, req)
	if err != nil {
		return nil, fmt.Errorf("send %T to %s: %w", msg, r.target, err)
	}
	if len(raw) == 0 {
		return nil, nil
	}
	reply, err := Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("reply to %T: %w", msg, err)
	}
	if reply.DaemonID() != r.daemon {
		return nil, fmt.Errorf("reply to %T names daemon %q", msg, reply.DaemonID())
	}
	return reply, nil
}

func (r *run) unexpected(reply Message) *Error {
	return r.fail(ReasonStateFailed, fmt.Errorf("unexpected reply %T in phase %s", reply, r.phase))
}

// abort leaves the source authoritative: stop capturing, unfence, and tell
// the target to discard its copy (best effort: a target that misses the
// abort keeps an inactive record that the next chunk 0 replaces).
func (r *run) abort(ctx context.Context, cause error) {
	if r.capture != nil { // never end a capture this run did not start
		r.host.EndCapture()
	}
	if r.fenced {
		r.host.Unfence()
	}
	reason := ReasonAborted
	var fe *Error
	if errors.As(cause, &fe) {
		reason = fe.Reason
	}
	if r.phase >= PhaseTransfer {
		// Use a fresh context: a cancelled migration must still abort.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _ = r.exchangeRaw(actx, &Failed{Daemon: r.daemon, Reason: reason, Detail: cause.Error()})
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
