package bus

import (
	"context"
	"errors"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/purplerain/mesh-operator/engine/adapter"
	"github.com/purplerain/mesh-operator/engine/bus/shard"
)

// worker is one shard's drain and batch goroutines.
type worker struct {
	b     *Bus
	s     *shard.Shard
	chunk chan []adapter.Event // drain → batch
	free  chan []adapter.Event // recycled chunks
	// finish asks the drain worker to empty the ring and exit; abort asks
	// both to stop promptly (what they hold is reported, not dispatched).
	finish    chan struct{}
	finishOne sync.Once
	drainDone chan struct{}
	batchDone chan struct{}

	seq       uint64        // batch sequence (batch worker only)
	processed atomic.Uint64 // events dispatched or given up
	pushLat   atomic.Int64  // last observed ring wait (ns)
	flushLat  atomic.Int64  // last observed dispatch time (ns)
	held      atomic.Int64  // events in chunks/batches not yet processed

	// Ticket progress (see ticket.go): the batch worker handles events in
	// ring-position order, so after it handled n events every ticket <= n
	// has its outcome. failedFrom is the first ticket of the first batch
	// given up (0: none); every ticket from it on reports failure.
	progressMu sync.Mutex
	handled    uint64
	failedFrom uint64
	progress   chan struct{} // closed and replaced after every batch
}

const chunkSize = 1024

func (b *Bus) startWorker(s *shard.Shard) *worker {
	w := &worker{
		b:         b,
		s:         s,
		chunk:     make(chan []adapter.Event, 4),
		free:      make(chan []adapter.Event, 6),
		finish:    make(chan struct{}),
		drainDone: make(chan struct{}),
		batchDone: make(chan struct{}),
		progress:  make(chan struct{}),
	}
	go w.drain()
	go w.batch()
	return w
}

// requestFinish makes the drain worker exit once the ring is empty.
func (w *worker) requestFinish() {
	w.finishOne.Do(func() { close(w.finish) })
	w.s.Notify()
}

// wait waits for both goroutines up to timeout, reporting whether they
// exited.
func (w *worker) wait(timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for _, ch := range []chan struct{}{w.drainDone, w.batchDone} {
		select {
		case <-ch:
		case <-t.C:
			return false
		}
	}
	return true
}

func (w *worker) getChunk() []adapter.Event {
	select {
	case c := <-w.free:
		return c[:chunkSize]
	default:
		return make([]adapter.Event, chunkSize)
	}
}

// drain moves events from the ring to the batch worker in chunks.
func (w *worker) drain() {
	defer close(w.drainDone)
	defer close(w.chunk)
	idle := time.NewTimer(time.Hour)
	defer idle.Stop()
	buf := w.getChunk()
	for {
		n := w.s.Ring.PopBatch(buf)
		if n > 0 {
			w.held.Add(int64(n))
			w.pushLat.Store(int64(w.b.now() - buf[0].Timestamp))
			select {
			case w.chunk <- buf[:n]:
			case <-w.b.hardCtx.Done():
				w.abandon(buf[:n])
				return
			}
			buf = w.getChunk()
			continue
		}
		select {
		case <-w.finish:
			// The ring is empty and the shard is no longer routable (or the
			// bus is closing): anything pushed after this is stranded and
			// returned by Remove.
			return
		default:
		}
		if !w.s.Park() {
			w.s.Unpark()
			continue
		}
		// The timer bounds the sleep so a missed doorbell (a producer that
		// read sleeping=false just before we set it) costs at most
		// MaxDelay, never a stuck event.
		idle.Reset(w.b.cfg.Batch.MaxDelay)
		select {
		case <-w.s.Wake():
		case <-idle.C:
		case <-w.finish:
		case <-w.b.hardCtx.Done():
			w.s.Unpark()
			return
		}
		w.s.Unpark()
	}
}

// abandon counts events that will never be dispatched.
func (w *worker) abandon(evs []adapter.Event) {
	if len(evs) == 0 {
		return
	}
	w.b.stats.lost.Add(uint64(len(evs)))
	w.b.lossy.Store(true)
	w.processed.Add(uint64(len(evs)))
	w.held.Add(-int64(len(evs)))
}

// batch assembles adaptive batches and dispatches them.
func (w *worker) batch() {
	defer close(w.batchDone)
	cfg := w.b.cfg.Batch
	target := cfg.Min
	batch := make([]adapter.Event, 0, cfg.Max)
	delay := time.NewTimer(time.Hour)
	delay.Stop()
	armed := false

	dispatch := func() {
		if len(batch) == 0 {
			return
		}
		w.dispatch(batch)
		clear(batch)
		batch = batch[:0]
	}
	for {
		var in []adapter.Event
		var ok bool
		select {
		case in, ok = <-w.chunk:
			if !ok {
				dispatch()
				return
			}
		case <-delay.C:
			armed = false
			dispatch()
			// A timeout flush means traffic is thinner than the target:
			// shrink it so the next batch waits less.
			target = max(target/2, cfg.Min)
			continue
		}
		orig := in
		for len(in) > 0 {
			room := min(cfg.Max-len(batch), len(in))
			batch = append(batch, in[:room]...)
			in = in[room:]
			if len(batch) >= target {
				if armed {
					delay.Stop()
					armed = false
				}
				dispatch()
				// A full batch means traffic keeps up with the target:
				// grow it to amortise per-batch adapter cost.
				target = min(target*2, cfg.Max)
			}
		}
		w.recycle(orig)
		if len(batch) > 0 && !armed {
			delay.Reset(cfg.MaxDelay)
			armed = true
		}
	}
}

// recycle returns a chunk to the free list. Only its used prefix needs
// zeroing: free chunks are kept all-zero, and the drain worker writes at
// most len(c) slots before handing one over.
func (w *worker) recycle(c []adapter.Event) {
	clear(c)
	c = c[:cap(c)]
	select {
	case w.free <- c:
	default:
	}
}

// dispatch sends events as one batch with retries, then accounts for them.
func (w *worker) dispatch(events []adapter.Event) {
	b := w.b
	batch := adapter.Batch{Shard: w.s.ID, Seq: w.seq, Nonce: b.nonce, Events: events}
	w.seq++
	start := time.Now()
	err := b.dispatchWithRetry(batch)
	w.flushLat.Store(int64(time.Since(start)))
	n := uint64(len(events))
	if err != nil {
		b.stats.lost.Add(n)
		b.stats.dispatchFailures.Add(1)
		var de *DispatchError
		if errors.As(err, &de) && b.cfg.OnDispatchError != nil {
			b.cfg.OnDispatchError(de)
		}
		b.cfg.Logger.Warn("bus: batch dropped", "shard", w.s.ID, "events", n, "err", err)
	}
	w.processed.Add(n)
	w.held.Add(-int64(n))
	w.recordProgress(n, err != nil)
}

// recordProgress publishes the outcome of the next n tickets to
// WaitDispatched callers.
func (w *worker) recordProgress(n uint64, failed bool) {
	w.progressMu.Lock()
	if failed && w.failedFrom == 0 {
		w.failedFrom = w.handled + 1
	}
	w.handled += n
	close(w.progress)
	w.progress = make(chan struct{})
	w.progressMu.Unlock()
}

// dispatchWithRetry calls OnBatch until it succeeds, fails fatally, runs
// out of attempts or the bus is hard-stopped, recording every attempt.
func (b *Bus) dispatchWithRetry(batch adapter.Batch) error {
	var attempts []Attempt
	for n := 0; ; n++ {
		ctx, cancel := context.WithTimeout(b.hardCtx, b.cfg.AdapterTimeout)
		t0 := time.Now()
		err := b.adapter.OnBatch(ctx, batch)
		cancel()
		if err == nil {
			b.stats.batches.Add(1)
			b.stats.eventsDispatched.Add(uint64(len(batch.Events)))
			return nil
		}
		attempts = append(attempts, Attempt{N: n, Err: err, Duration: time.Since(t0)})
		if adapter.IsFatal(err) || n+1 >= b.cfg.MaxAttempts || b.hardCtx.Err() != nil {
			return &DispatchError{Shard: batch.Shard, Seq: batch.Seq, Events: len(batch.Events), Attempts: attempts}
		}
		t := time.NewTimer(RetryBackoff(batch.Shard, n, b.cfg.RetryBase, b.cfg.RetryMax, b.nonce))
		select {
		case <-t.C:
		case <-b.hardCtx.Done():
			t.Stop()
		}
	}
}

// RetryBackoff is the delay before retry attempt+1 of a shard's batch:
// exponential in attempt (base·2^attempt, capped at max) with jitter in
// [d/2, d) derived from (seed, shard, attempt), so shards that fail
// together do not retry in lockstep.
func RetryBackoff(shardID uint16, attempt int, base, maxDelay time.Duration, seed string) time.Duration {
	d := maxDelay
	if attempt < 62 {
		if hi, lo := bits.Mul64(uint64(base), 1<<uint(attempt)); hi == 0 && lo < uint64(maxDelay) {
			d = time.Duration(lo)
		}
	}
	half := uint64(d / 2)
	if half == 0 {
		return d
	}
	h := mix(hashString(seed) ^ uint64(shardID)<<32 ^ uint64(attempt))
	j, _ := bits.Mul64(h, half) // unbiased in [0, half)
	return time.Duration(half + j)
}

func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix is splitmix64's finaliser.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
