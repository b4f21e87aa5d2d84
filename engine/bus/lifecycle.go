package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/purplerain/mesh-operator/engine/adapter"
	"github.com/purplerain/mesh-operator/engine/bus/shard"
)

// ShardActivator is implemented by adapters that prepare per-shard state
// (open a log, create a stream) before a shard becomes routable. An error
// aborts the activation.
type ShardActivator interface {
	ActivateShard(ctx context.Context, shard uint16) error
}

// AddShard adds and activates shard id. If the adapter's ActivateShard
// fails, the activation is rolled back (see abortShard) and the error
// returned.
func (b *Bus) AddShard(id uint16) error {
	if b.closing.Load() {
		return ErrClosed
	}
	return b.addShard(id)
}

func (b *Bus) addShard(id uint16) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, err := b.mgr.Add(id)
	if err != nil {
		return err
	}
	w := b.startWorker(s)
	b.workers[id] = w
	if int(id) >= b.nextID {
		b.nextID = int(id) + 1
	}
	if act, ok := b.adapter.(ShardActivator); ok {
		ctx, cancel := context.WithTimeout(b.hardCtx, b.cfg.AdapterTimeout)
		err := act.ActivateShard(ctx, id)
		cancel()
		if err != nil {
			b.abortShardLocked(id)
			return fmt.Errorf("activate shard %d: %w", id, err)
		}
	}
	if _, err := b.mgr.Activate(id); err != nil {
		b.abortShardLocked(id)
		return err
	}
	return nil
}

// abortShardLocked rolls back a failed activation: the shard leaves
// routing (the active count drops only if it had activated), its drain
// worker empties the ring, and the batch worker is awaited for at most
// 2×AdapterTimeout so the batch it holds is dispatched rather than
// dropped. Events left in the ring after that are dispatched directly.
func (b *Bus) abortShardLocked(id uint16) {
	w := b.workers[id]
	delete(b.workers, id)
	w.requestFinish()
	if !w.wait(2 * b.cfg.AdapterTimeout) {
		// The worker is parked in the adapter; what it holds is lost.
		held := w.held.Load()
		if held > 0 {
			b.stats.lost.Add(uint64(held))
			b.lossy.Store(true)
		}
		b.cfg.Logger.Warn("bus: activation abort: worker did not finish in time", "shard", id, "held", held)
	}
	s := b.mgr.Get(id)
	stranded, err := b.mgr.Rollback(id)
	if err != nil {
		b.cfg.Logger.Warn("bus: rollback", "shard", id, "err", err)
	}
	// Rollback marked the shard Stopped; wait out producers that picked it
	// from a stale table, then take what they pushed too.
	b.quiesce(time.Now().Add(2*b.cfg.AdapterTimeout), s)
	stranded = append(stranded, drainRing(s)...)
	b.retire(s)
	b.flushStranded(id, stranded)
}

// flushStranded dispatches events left in a removed shard's ring.
func (b *Bus) flushStranded(id uint16, evs []adapter.Event) {
	if len(evs) == 0 {
		return
	}
	err := b.dispatchWithRetry(adapter.Batch{Shard: id, Seq: 1 << 63, Nonce: b.nonce + "-stranded", Events: evs})
	if err != nil {
		b.stats.lost.Add(uint64(len(evs)))
		b.stats.dispatchFailures.Add(1)
		var de *DispatchError
		if errors.As(err, &de) && b.cfg.OnDispatchError != nil {
			b.cfg.OnDispatchError(de)
		}
	}
}

// RemoveShard drains shard id (no new events are routed to it), waits
// until its workers have dispatched everything, stops it and removes it,
// then dispatches events that producers pushed after the drain began.
func (b *Bus) RemoveShard(ctx context.Context, id uint16) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.removeShardLocked(ctx, id)
}

func (b *Bus) removeShardLocked(ctx context.Context, id uint16) error {
	if err := b.mgr.Drain(id); err != nil {
		return err
	}
	w := b.workers[id]
	w.requestFinish()
	done := make(chan struct{})
	go func() { w.wait(time.Duration(1<<63 - 1)); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("remove shard %d: %w", id, ctx.Err())
	}
	delete(b.workers, id)
	if b.hookWorkersStopped != nil {
		b.hookWorkersStopped(id)
	}
	if err := b.mgr.Stop(id); err != nil {
		return err
	}
	s := b.mgr.Get(id)
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(b.cfg.ShutdownTimeout)
	}
	if !b.quiesce(dl, s) {
		return fmt.Errorf("remove shard %d: producers still in flight", id)
	}
	stranded, err := b.mgr.Remove(id)
	if err != nil {
		return err
	}
	b.retire(s)
	b.flushStranded(id, stranded)
	return nil
}

// ScaleUp adds one shard with the next unused id and returns it.
func (b *Bus) ScaleUp() (uint16, error) {
	b.mu.Lock()
	id := b.nextID
	b.mu.Unlock()
	if id > adapter.MaxShardID {
		return 0, fmt.Errorf("scale up: %w", shard.ErrBudget)
	}
	return uint16(id), b.AddShard(uint16(id))
}

// ScaleDown removes shard id. Base shards cannot be removed.
func (b *Bus) ScaleDown(ctx context.Context, id uint16) error {
	if int(id) < b.cfg.BaseShards {
		return fmt.Errorf("scale down shard %d: base shards are permanent: %w", id, shard.ErrState)
	}
	return b.RemoveShard(ctx, id)
}

// Flush waits until every event accepted before the call has been
// dispatched (or counted as dropped), then flushes the adapter.
func (b *Bus) Flush(ctx context.Context) error {
	type mark struct {
		w    *worker
		s    *shard.Shard
		want uint64
	}
	b.mu.Lock()
	marks := make([]mark, 0, len(b.workers))
	for _, w := range b.workers {
		marks = append(marks, mark{w, w.s, w.s.Ingested.Load()})
	}
	b.mu.Unlock()
	for _, m := range marks {
		for m.w.processed.Load()+m.s.Evicted.Load() < m.want {
			select {
			case <-m.w.batchDone:
				// The worker exited (shard removed or bus closed): what it
				// had is accounted for by RemoveShard or Close.
			case <-ctx.Done():
				return fmt.Errorf("bus flush: %w", ctx.Err())
			case <-time.After(100 * time.Microsecond):
				m.s.Notify()
				continue
			}
			break
		}
	}
	return b.adapter.Flush(ctx)
}

// Close stops admission, waits for in-flight ingests (two consecutive zero
// passes), drains every shard and flushes the adapter, all within
// ShutdownTimeout. It does not close the adapter. If events had to be
// abandoned it returns an error wrapping ErrLossyShutdown.
func (b *Bus) Close() error {
	b.closeOnce.Do(func() { b.closeErr = b.shutdown() })
	return b.closeErr
}

func (b *Bus) shutdown() error {
	deadline := time.Now().Add(b.cfg.ShutdownTimeout)
	b.closing.Store(true)
	close(b.stopMon)
	b.monitorWG.Wait()

	// Producers increment their shard's InFlight before loading closing
	// (see acquire), so once every shard reads zero no later push can
	// land. Given that ordering one zero pass would do; the release notes
	// require two consecutive passes, which keeps the drain safe should
	// the producer side ever be reordered, for one extra 20µs sleep.
	b.quiesce(deadline, b.mgr.All()...)

	b.mu.Lock()
	workers := make([]*worker, 0, len(b.workers))
	for _, w := range b.workers {
		w.requestFinish()
		workers = append(workers, w)
	}
	b.mu.Unlock()

	for _, w := range workers {
		if !w.wait(time.Until(deadline)) {
			break
		}
	}
	// Past the deadline: abort adapter calls and retry sleeps, then count
	// what never made it.
	b.hardCancel()
	var lost uint64
	for _, w := range workers {
		w.wait(2 * b.cfg.AdapterTimeout)
		if h := w.held.Load(); h > 0 {
			lost += uint64(h)
		}
		left, _ := drainRemaining(w.s)
		lost += left
	}
	if lost > 0 {
		b.stats.lost.Add(lost)
		b.lossy.Store(true)
	}
	fctx, cancel := context.WithDeadline(context.Background(), deadline.Add(b.cfg.AdapterTimeout))
	ferr := b.adapter.Flush(fctx)
	cancel()
	if b.lossy.Load() {
		return fmt.Errorf("bus close: %d events dropped: %w", b.Stats().EventsDropped, ErrLossyShutdown)
	}
	if ferr != nil {
		return fmt.Errorf("bus close: adapter flush: %w", ferr)
	}
	return nil
}

// drainRemaining empties a shard's ring after its workers stopped and
// returns how many events it discarded.
func drainRemaining(s *shard.Shard) (uint64, error) {
	var n uint64
	buf := make([]adapter.Event, 256)
	for {
		k := s.Ring.PopBatch(buf)
		if k == 0 {
			return n, nil
		}
		n += uint64(k)
	}
}

// stopAllWorkersNow is used when New fails part way.
func (b *Bus) stopAllWorkersNow() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, w := range b.workers {
		w.requestFinish()
		w.wait(time.Second)
		delete(b.workers, id)
	}
}

// retire folds a removed shard's ring counters into the bus totals.
func (b *Bus) retire(s *shard.Shard) {
	if s == nil {
		return
	}
	b.removedIngested.Add(s.Ingested.Load())
	b.removedDropped.Add(s.Evicted.Load() + s.Rejected.Load())
}

// quiesce waits until the shards' in-flight producer counts sum to zero on
// two consecutive passes, or until deadline. It reports whether it saw the
// two zero passes.
func (b *Bus) quiesce(deadline time.Time, shards ...*shard.Shard) bool {
	zeros := 0
	for zeros < 2 {
		var n uint64
		for _, s := range shards {
			if s != nil {
				n += s.InFlight.Load()
			}
		}
		if n == 0 {
			zeros++
		} else {
			zeros = 0
		}
		if zeros == 2 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Microsecond)
	}
	return true
}

func drainRing(s *shard.Shard) []adapter.Event {
	var out []adapter.Event
	buf := make([]adapter.Event, 256)
	for {
		n := s.Ring.PopBatch(buf)
		if n == 0 {
			return out
		}
		out = append(out, buf[:n]...)
	}
}
