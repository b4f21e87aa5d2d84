package cortex

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/purplerain/mesh-operator/engine/redex"
)

var (
	// ErrHalted wraps the reason a driver stopped folding on its own (a fold
	// error under Stop, a pruned gap, or the log closing).
	ErrHalted = errors.New("cortex: driver halted")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("cortex: driver closed")
	// ErrNoEncoder is returned by Snapshot when Options.Encode is nil.
	ErrNoEncoder = errors.New("cortex: no state encoder configured")
)

// FoldError is the halt reason when a fold fails under the Stop policy.
type FoldError struct {
	Seq uint64
	Err error
}

func (e *FoldError) Error() string {
	return fmt.Sprintf("cortex: fold of seq %d failed: %v", e.Seq, e.Err)
}
func (e *FoldError) Unwrap() error { return e.Err }

// StartPosition says where a driver begins folding.
type StartPosition struct {
	kind startKind
	seq  uint64
}

type startKind uint8

const (
	startBeginning startKind = iota
	startLive
	startSeq
)

// FromBeginning folds from seq 0. If retention already dropped a prefix,
// the driver halts with redex.ErrPruned rather than fold a state that
// misses entries.
func FromBeginning() StartPosition { return StartPosition{kind: startBeginning} }

// LiveOnly folds only entries appended after Start returns.
func LiveOnly() StartPosition { return StartPosition{kind: startLive} }

// FromSeq folds from seq n on. n == math.MaxUint64 is redex.Live, so a
// driver started there folds from the log's NextSeq like LiveOnly.
func FromSeq(n uint64) StartPosition { return StartPosition{kind: startSeq, seq: n} }

// ErrorPolicy says what a fold error does.
type ErrorPolicy uint8

const (
	// Stop halts the driver at the first fold error.
	Stop ErrorPolicy = iota
	// LogAndContinue logs the error, skips the entry and keeps folding.
	LogAndContinue
)

// FoldFunc applies one entry to the state.
type FoldFunc[S any] func(state *S, e redex.Entry) error

// Options configures a Driver.
type Options[S any] struct {
	Start   StartPosition
	OnError ErrorPolicy
	// ChangesBuffer is the per-subscriber notification buffer. Default 1024.
	ChangesBuffer int
	// ReadBatch is how many entries a catch-up read takes at once. Default 256.
	ReadBatch int
	// Encode serialises the state for Snapshot. Optional.
	Encode func(*S) ([]byte, error)
	// Logger receives fold errors under LogAndContinue. Default slog.Default().
	Logger *slog.Logger
}

// Snapshot is a driver's state as of a seq.
type Snapshot struct {
	State []byte
	// Through is the last seq folded (or skipped) into State; valid only
	// when Folded is true. NextSeq is the seq a restored driver resumes at.
	Through uint64
	Folded  bool
}

// NextSeq returns the seq a driver restored from s starts at. It saturates:
// a snapshot through math.MaxUint64 has no next seq, and wrapping to 0
// would refold the whole log into a state that already holds it.
func (s Snapshot) NextSeq() uint64 {
	if !s.Folded {
		return 0
	}
	return nextAfter(s.Through)
}

// nextAfter is seq+1 saturating at math.MaxUint64.
func nextAfter(seq uint64) uint64 {
	if seq == math.MaxUint64 {
		return seq
	}
	return seq + 1
}

// Driver folds a log into state on its own goroutine.
type Driver[S any] struct {
	log  *redex.Log
	fold FoldFunc[S]
	opts Options[S]
	lg   *slog.Logger

	stateMu sync.RWMutex
	state   S
	// next is the seq after the last entry folded or skipped (guarded by
	// stateMu for writes; mirrored in nextAtomic). It saturates at
	// math.MaxUint64; exhausted records that the entry with that seq was
	// folded, after which no entry can follow.
	next            uint64
	exhausted       bool
	nextAtomic      atomic.Uint64
	exhaustedAtomic atomic.Bool

	changes *broadcast
	running atomic.Bool
	errs    atomic.Uint64 // fold errors under LogAndContinue

	waitMu  sync.Mutex
	waiters []waiter
	halt    error // set once, under waitMu

	cancel context.CancelFunc
	done   chan struct{}
}

type waiter struct {
	seq uint64
	ch  chan error
}

// Start launches a driver folding l into initial.
func Start[S any](l *redex.Log, initial S, fold FoldFunc[S], opts Options[S]) (*Driver[S], error) {
	return start(l, initial, fold, opts, nil)
}

// OpenFromSnapshot restores the state from snap and folds on from
// snap.NextSeq(); opts.Start is ignored. A snapshot through math.MaxUint64
// already holds every possible seq: the restored driver folds nothing more
// and halts if the log delivers another entry.
func OpenFromSnapshot[S any](l *redex.Log, snap Snapshot, decode func([]byte) (S, error), fold FoldFunc[S], opts Options[S]) (*Driver[S], error) {
	st, err := decode(snap.State)
	if err != nil {
		return nil, fmt.Errorf("cortex: decode snapshot: %w", err)
	}
	pos := resumeAt{next: snap.NextSeq(), exhausted: snap.Folded && snap.Through == math.MaxUint64}
	return start(l, st, fold, opts, &pos)
}

// resumeAt is where a driver restored from a snapshot continues.
type resumeAt struct {
	next      uint64
	exhausted bool // the snapshot already holds the entry with the largest seq
}

func start[S any](l *redex.Log, initial S, fold FoldFunc[S], opts Options[S], resume *resumeAt) (*Driver[S], error) {
	d := newDriver(l, initial, fold, opts)
	var from uint64
	switch {
	case resume != nil && resume.exhausted:
		// Nothing can follow; any entry the tail delivers halts the driver.
		from = redex.Live
	case resume != nil:
		from = resume.next
	case opts.Start.kind == startBeginning:
		from = 0
	case opts.Start.kind == startSeq:
		from = opts.Start.seq
	case opts.Start.kind == startLive:
		from = redex.Live
	}
	// Subscribing here (not in the goroutine) fixes LiveOnly's start at the
	// moment Start returns.
	t, err := l.Tail(from)
	if err != nil {
		return nil, fmt.Errorf("cortex: tail log: %w", err)
	}
	d.next = t.From()
	switch {
	case resume != nil && resume.exhausted:
		d.next, d.exhausted = math.MaxUint64, true
		d.exhaustedAtomic.Store(true)
	case resume != nil && resume.next == redex.Live:
		// A snapshot through MaxUint64-1 resumes at exactly MaxUint64, which
		// Tail can only express as Live; a log that is not there yet is
		// inconsistent with the snapshot and halts the driver at its first
		// entry instead of folding entries the snapshot already holds.
		d.next = math.MaxUint64
	}
	d.nextAtomic.Store(d.next)
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.running.Store(true)
	go d.run(ctx, t)
	return d, nil
}

// newDriver builds a driver that is not folding yet.
func newDriver[S any](l *redex.Log, initial S, fold FoldFunc[S], opts Options[S]) *Driver[S] {
	if opts.ChangesBuffer <= 0 {
		opts.ChangesBuffer = 1024
	}
	if opts.ReadBatch <= 0 {
		opts.ReadBatch = 256
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Driver[S]{
		log: l, fold: fold, opts: opts, lg: opts.Logger, state: initial,
		changes: newBroadcast(opts.ChangesBuffer), done: make(chan struct{}),
	}
}

func (d *Driver[S]) run(ctx context.Context, t *redex.Tail) {
	defer close(d.done)
	buf := make([]redex.Entry, 0, d.opts.ReadBatch)
	for {
		e, err := t.Next(ctx)
		if err == nil {
			if !d.apply(e) {
				t.Close()
				return
			}
			continue
		}
		t.Close()
		if !errors.Is(err, redex.ErrLagged) {
			if ctx.Err() != nil {
				d.stop(ErrClosed)
			} else {
				d.stop(fmt.Errorf("%w: %w", ErrHalted, err))
			}
			return
		}
		// The tail fell behind: catch up by reading, then re-tail.
		if t, err = d.catchUp(ctx, buf); err != nil {
			return
		}
	}
}

// catchUp reads from d.next until a tail from there fits its buffer.
func (d *Driver[S]) catchUp(ctx context.Context, buf []redex.Entry) (*redex.Tail, error) {
	for {
		if ctx.Err() != nil {
			d.stop(ErrClosed)
			return nil, ErrClosed
		}
		entries, err := d.log.ReadInto(buf[:0], d.next, d.opts.ReadBatch)
		if err != nil {
			d.stop(fmt.Errorf("%w: %w", ErrHalted, err))
			return nil, err
		}
		for _, e := range entries {
			if !d.apply(e) {
				return nil, ErrHalted
			}
		}
		if len(entries) < d.opts.ReadBatch {
			t, err := d.log.Tail(d.next)
			if err != nil {
				d.stop(fmt.Errorf("%w: %w", ErrHalted, err))
				return nil, err
			}
			return t, nil
		}
	}
}

// apply folds one entry; it returns false when the driver halted.
func (d *Driver[S]) apply(e redex.Entry) bool {
	if d.exhausted {
		// The entry with the largest seq was folded; nothing can follow it.
		d.stop(fmt.Errorf("%w: seq %d after the last possible seq was folded", ErrHalted, e.Seq))
		return false
	}
	if e.Seq != d.next {
		// The log guarantees a gap-free tail; a gap here is a bug.
		d.stop(fmt.Errorf("%w: expected seq %d, got %d", ErrHalted, d.next, e.Seq))
		return false
	}
	d.stateMu.Lock()
	err := d.fold(&d.state, e)
	if err != nil && d.opts.OnError == Stop {
		d.stateMu.Unlock()
		d.stop(fmt.Errorf("%w: %w", ErrHalted, &FoldError{Seq: e.Seq, Err: err}))
		return false
	}
	d.next = nextAfter(e.Seq)
	if e.Seq == math.MaxUint64 {
		d.exhausted = true
		d.exhaustedAtomic.Store(true)
	}
	d.nextAtomic.Store(d.next)
	d.stateMu.Unlock()
	if err != nil {
		d.errs.Add(1)
		d.lg.Warn("cortex: fold error skipped", "seq", e.Seq, "err", err)
	} else {
		d.changes.publish(e.Seq)
	}
	d.release(e.Seq, nil)
	return true
}

// stop marks the driver halted, then releases streams and waiters.
func (d *Driver[S]) stop(reason error) {
	d.running.Store(false)
	d.changes.end(reason)
	d.release(0, reason)
}

// release wakes waiters for seqs up to through, or all of them with reason.
func (d *Driver[S]) release(through uint64, reason error) {
	d.waitMu.Lock()
	defer d.waitMu.Unlock()
	if reason != nil && d.halt == nil {
		d.halt = reason
	}
	kept := d.waiters[:0]
	for _, w := range d.waiters {
		switch {
		case reason != nil:
			w.ch <- reason
		case w.seq <= through:
			w.ch <- nil
		default:
			kept = append(kept, w)
		}
	}
	clear(d.waiters[len(kept):])
	d.waiters = kept
}

// IsRunning reports whether the driver is still folding.
func (d *Driver[S]) IsRunning() bool { return d.running.Load() }

// Err returns why the driver stopped (nil while running).
func (d *Driver[S]) Err() error {
	d.waitMu.Lock()
	defer d.waitMu.Unlock()
	return d.halt
}

// FoldErrors counts entries skipped under LogAndContinue.
func (d *Driver[S]) FoldErrors() uint64 { return d.errs.Load() }

// NextSeq returns the seq the driver folds next.
func (d *Driver[S]) NextSeq() uint64 { return d.nextAtomic.Load() }

// View calls fn with the state under the read lock; fn must not keep it.
func (d *Driver[S]) View(fn func(state *S)) {
	d.stateMu.RLock()
	defer d.stateMu.RUnlock()
	fn(&d.state)
}

// Changes subscribes to successfully folded seqs, skipping lag notices.
func (d *Driver[S]) Changes() *ChangeStream { return d.changes.subscribe(false) }

// ChangesWithLag subscribes to folded seqs and Lagged(n) notices.
func (d *Driver[S]) ChangesWithLag() *ChangeStream { return d.changes.subscribe(true) }

// WaitForSeq blocks until seq has been folded (or skipped under
// LogAndContinue). It returns the halt reason if the driver stops first.
func (d *Driver[S]) WaitForSeq(ctx context.Context, seq uint64) error {
	d.waitMu.Lock()
	if d.halt != nil {
		err := d.halt
		d.waitMu.Unlock()
		return err
	}
	if seq < d.nextAtomic.Load() || d.exhaustedAtomic.Load() {
		d.waitMu.Unlock()
		return nil
	}
	ch := make(chan error, 1)
	d.waiters = append(d.waiters, waiter{seq: seq, ch: ch})
	d.waitMu.Unlock()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		// Unregister, so callers that give up (timeouts on a stalled log)
		// do not pile up waiters; a release that won the race still counts.
		d.waitMu.Lock()
		if i := slices.IndexFunc(d.waiters, func(w waiter) bool { return w.ch == ch }); i >= 0 {
			d.waiters = slices.Delete(d.waiters, i, i+1)
		}
		d.waitMu.Unlock()
		select {
		case err := <-ch:
			return err
		default:
			return ctx.Err()
		}
	}
}

// Snapshot encodes the state together with the seq it is folded through.
func (d *Driver[S]) Snapshot() (Snapshot, error) {
	if d.opts.Encode == nil {
		return Snapshot{}, ErrNoEncoder
	}
	d.stateMu.RLock()
	defer d.stateMu.RUnlock()
	b, err := d.opts.Encode(&d.state)
	if err != nil {
		return Snapshot{}, fmt.Errorf("cortex: encode state: %w", err)
	}
	s := Snapshot{State: b}
	switch {
	case d.exhausted:
		s.Through, s.Folded = math.MaxUint64, true
	case d.next > 0:
		s.Through, s.Folded = d.next-1, true
	}
	return s, nil
}

// Close stops the driver and waits for its goroutine (so it waits for a
// fold in progress). It does not close the log. Fold functions must not
// call View or Snapshot: they run under the state lock.
func (d *Driver[S]) Close() error {
	d.cancel()
	<-d.done
	return nil
}
