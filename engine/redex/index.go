package redex

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultIndexBackoff is the wait before an Index re-tails after a lag,
// one step per consecutive lag, saturating at the last value.
var DefaultIndexBackoff = []time.Duration{5 * time.Millisecond, 20 * time.Millisecond, 60 * time.Millisecond, 250 * time.Millisecond}

// IndexOptions configures an Index.
type IndexOptions struct {
	// Backoff overrides DefaultIndexBackoff.
	Backoff []time.Duration
	// HealthyAfter is how long a re-tailed subscription must stay
	// connected before the backoff starts again from its first step.
	// Default 1s.
	HealthyAfter time.Duration
	// LogEvery rate-limits the lag warning: at most one per LogEvery, the
	// next one reporting how many were suppressed. Default 10s.
	LogEvery time.Duration
	// Now and Sleep replace the clock in tests. Sleep must return early
	// with ctx's error when ctx ends.
	Now    func() time.Time
	Sleep  func(ctx context.Context, d time.Duration) error
	Logger *slog.Logger
}

// Index is a projection of a log into a map, fed by tailing the log.
//
// It starts by reading every retained entry, then follows live appends.
// If its tail lags (the log's tail buffer overflowed), entries were lost to
// it, so it clears itself, counts a lag reset, waits out a backoff
// (5/20/60/250 ms by default) and re-tails live-only. LagResets lets
// downstream aggregates detect that the projection was rebuilt lossily.
type Index[K comparable, V any] struct {
	log   *Log
	apply func(m map[K]V, e Entry)
	opts  IndexOptions
	lg    *slog.Logger

	mu   sync.RWMutex
	m    map[K]V
	next atomic.Uint64 // seq after the last applied entry

	lagResets  atomic.Uint64
	suppressed int       // lag warnings not logged since lastLog
	lastLog    time.Time // when the last lag warning was logged
	step       int       // next backoff step

	cancel context.CancelFunc
	done   chan struct{}
}

// NewIndex starts an index over l; apply updates the map for one entry and
// runs on the index goroutine under the index's write lock.
func NewIndex[K comparable, V any](l *Log, apply func(m map[K]V, e Entry), opts IndexOptions) *Index[K, V] {
	if len(opts.Backoff) == 0 {
		opts.Backoff = DefaultIndexBackoff
	}
	if opts.HealthyAfter <= 0 {
		opts.HealthyAfter = time.Second
	}
	if opts.LogEvery <= 0 {
		opts.LogEvery = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Sleep == nil {
		opts.Sleep = sleepCtx
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	ix := &Index[K, V]{
		log: l, apply: apply, opts: opts, lg: opts.Logger.With("redex", l.opts.Name),
		m: make(map[K]V), cancel: cancel, done: make(chan struct{}),
	}
	go ix.run(ctx)
	return ix
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (ix *Index[K, V]) run(ctx context.Context) {
	defer close(ix.done)
	t, err := ix.catchUp(ctx, ix.log.FirstSeq())
	for {
		var connected time.Time
		if err == nil {
			connected = ix.opts.Now()
			err = ix.follow(ctx, t)
		}
		if ctx.Err() != nil || !errors.Is(err, ErrLagged) && !errors.Is(err, ErrPruned) {
			if ctx.Err() == nil && !errors.Is(err, ErrClosed) {
				ix.lg.Error("redex index stopped", "err", err)
			}
			return
		}
		if !connected.IsZero() && ix.opts.Now().Sub(connected) >= ix.opts.HealthyAfter {
			ix.step = 0 // the last subscription was healthy: start the backoff over
		}
		t, err = ix.reset(ctx, err)
	}
}

// catchUp applies retained entries from seq from on by reading the log,
// then returns a tail positioned right after them.
func (ix *Index[K, V]) catchUp(ctx context.Context, from uint64) (*Tail, error) {
	var buf []Entry
	for ctx.Err() == nil {
		var err error
		buf, err = ix.log.ReadInto(buf[:0], from, 256)
		if err != nil {
			return nil, err
		}
		ix.applyAll(buf)
		if len(buf) > 0 {
			from = buf[len(buf)-1].Seq + 1
			continue
		}
		t, err := ix.log.Tail(from)
		if err != nil {
			return nil, err
		}
		if !errors.Is(t.Err(), ErrLagged) {
			return t, nil
		}
		// Appends raced past the tail buffer; read again from from.
	}
	return nil, ctx.Err()
}

func (ix *Index[K, V]) applyAll(es []Entry) {
	if len(es) == 0 {
		return
	}
	ix.mu.Lock()
	for _, e := range es {
		ix.apply(ix.m, e)
	}
	ix.mu.Unlock()
	ix.next.Store(es[len(es)-1].Seq + 1)
}

// follow applies live entries until the tail ends; it returns why.
func (ix *Index[K, V]) follow(ctx context.Context, t *Tail) error {
	defer t.Close()
	for {
		e, err := t.Next(ctx)
		if err != nil {
			return err
		}
		ix.mu.Lock()
		ix.apply(ix.m, e)
		ix.mu.Unlock()
		ix.next.Store(e.Seq + 1)
	}
}

// reset clears the projection after a lag, backs off and re-tails live.
func (ix *Index[K, V]) reset(ctx context.Context, cause error) (*Tail, error) {
	ix.mu.Lock()
	clear(ix.m)
	ix.mu.Unlock()
	n := ix.lagResets.Add(1)
	wait := ix.opts.Backoff[min(ix.step, len(ix.opts.Backoff)-1)]
	ix.step++
	ix.warnRateLimited(n, wait, cause)
	if err := ix.opts.Sleep(ctx, wait); err != nil {
		return nil, err
	}
	t, err := ix.log.Tail(Live)
	if err != nil {
		return nil, err
	}
	ix.next.Store(t.From())
	return t, nil
}

// warnRateLimited logs a lag at most once per LogEvery, so a projection
// that keeps lagging under sustained load does not flood the log.
func (ix *Index[K, V]) warnRateLimited(resets uint64, wait time.Duration, cause error) {
	now := ix.opts.Now()
	if !ix.lastLog.IsZero() && now.Sub(ix.lastLog) < ix.opts.LogEvery {
		ix.suppressed++
		return
	}
	ix.lg.Warn("redex index lagged; cleared and re-tailing live", "lag_resets", resets, "backoff", wait, "suppressed_warnings", ix.suppressed, "cause", cause)
	ix.lastLog, ix.suppressed = now, 0
}

// Get returns the value for k.
func (ix *Index[K, V]) Get(k K) (V, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	v, ok := ix.m[k]
	return v, ok
}

// Len returns the number of keys.
func (ix *Index[K, V]) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.m)
}

// View calls fn with the map under the read lock; fn must not keep it.
func (ix *Index[K, V]) View(fn func(m map[K]V)) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	fn(ix.m)
}

// NextSeq returns the seq after the last entry applied.
func (ix *Index[K, V]) NextSeq() uint64 { return ix.next.Load() }

// LagResets counts how many times the index cleared itself after a lag.
func (ix *Index[K, V]) LagResets() uint64 { return ix.lagResets.Load() }

// Close stops the index goroutine and waits for it.
func (ix *Index[K, V]) Close() {
	ix.cancel()
	<-ix.done
}
