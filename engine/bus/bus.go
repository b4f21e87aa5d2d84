package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	randv2 "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/purplerain/mesh-operator/engine/adapter"
	"github.com/purplerain/mesh-operator/engine/bus/shard"
)

// Event is one event to ingest. A non-empty Key routes it to base shard
// (xxhash(Key)*BaseShards)>>64; keyless events go to a least-loaded active
// shard.
type Event struct {
	Key     []byte
	Payload []byte
}

// Receipt tells where an accepted event went.
type Receipt struct {
	Shard     uint16
	Timestamp uint64
}

// BatchReceipt reports an IngestBatch: how many events each shard took.
type BatchReceipt struct {
	Accepted  int
	PerShard  map[uint16]int
	Timestamp uint64
}

// Bus is the sharded event bus. Create it with New; all methods are safe
// for concurrent use.
type Bus struct {
	cfg     Config
	adapter adapter.Adapter
	mgr     *shard.Manager
	nonce   string
	base    time.Time // monotonic baseline for ingest timestamps

	closing atomic.Bool

	// hardCtx is cancelled when Close gives up waiting; it aborts adapter
	// calls and retry sleeps.
	hardCtx    context.Context
	hardCancel context.CancelFunc

	mu      sync.Mutex // guards workers and topology changes
	workers map[uint16]*worker
	nextID  int

	stats counters
	// removedIngested/removedDropped keep removed shards' ring counters
	// in the totals.
	removedIngested atomic.Uint64
	removedDropped  atomic.Uint64
	lossy           atomic.Bool
	closeOnce       sync.Once
	closeErr        error
	monitorWG       sync.WaitGroup
	stopMon         chan struct{}
	scaleState      shard.ScalingState
	windows         map[uint16]*shard.Window

	// hookWorkersStopped lets tests act between a removed shard's workers
	// exiting and its ring being emptied (where late producers strand
	// events).
	hookWorkersStopped func(id uint16)
}

type counters struct {
	batches          atomic.Uint64
	eventsDispatched atomic.Uint64
	dispatchFailures atomic.Uint64
	// lost counts events dropped outside the rings' own counters: batches
	// given up after retries, and events abandoned by Close or an aborted
	// activation.
	lost atomic.Uint64
}

// New starts a bus over a with cfg.BaseShards active shards.
func New(a adapter.Adapter, cfg Config) (*Bus, error) {
	cfg = cfg.withDefaults()
	var nb [8]byte
	if _, err := rand.Read(nb[:]); err != nil {
		return nil, fmt.Errorf("bus: nonce: %w", err)
	}
	b := &Bus{
		cfg:     cfg,
		adapter: a,
		mgr:     shard.NewManager(cfg.RingCapacity, cfg.MaxShards),
		nonce:   hex.EncodeToString(nb[:]),
		base:    time.Now(),
		workers: make(map[uint16]*worker),
		stopMon: make(chan struct{}),
		windows: make(map[uint16]*shard.Window),
	}
	b.hardCtx, b.hardCancel = context.WithCancel(context.Background())
	for i := 0; i < cfg.BaseShards; i++ {
		if err := b.addShard(uint16(i)); err != nil {
			b.hardCancel()
			b.stopAllWorkersNow()
			return nil, fmt.Errorf("bus: base shard %d: %w", i, err)
		}
	}
	b.monitorWG.Add(1)
	go b.monitor()
	return b, nil
}

// Nonce identifies this bus instance in adapter dedup ids.
func (b *Bus) Nonce() string { return b.nonce }

// now returns nanoseconds since the bus's baseline. time.Since reads the
// monotonic clock, so the value never decreases.
func (b *Bus) now() uint64 { return uint64(time.Since(b.base)) }

// errStopped: the shard chosen from a stale routing table has stopped.
var errStopped = errors.New("bus: shard stopped")

// acquire registers an in-flight push to s. It increments s.InFlight
// before it loads closing and the shard state; Close and RemoveShard store
// those first and then wait for InFlight to read zero, so with Go's
// sequentially consistent atomics every push is either refused here or
// waited for there.
func (b *Bus) acquire(s *shard.Shard) error {
	s.InFlight.Add(1)
	if b.closing.Load() {
		s.InFlight.Add(^uint64(0))
		return ErrClosed
	}
	if s.State() == shard.Stopped {
		s.InFlight.Add(^uint64(0))
		return errStopped
	}
	return nil
}

func release(s *shard.Shard) { s.InFlight.Add(^uint64(0)) }

// route picks a shard with pick and acquires it, re-picking (from the now
// current routing table) if a stale pick had stopped.
func (b *Bus) route(pick func() *shard.Shard) (*shard.Shard, error) {
	for try := 0; try < 4; try++ {
		s := pick()
		if s == nil {
			break
		}
		switch err := b.acquire(s); err {
		case nil:
			return s, nil
		case errStopped:
			continue
		default:
			return nil, err
		}
	}
	if b.closing.Load() {
		return nil, ErrClosed
	}
	return nil, ErrUnrouted
}

// IngestRaw ingests one keyless event. It does not copy payload: the
// caller must not modify it afterwards.
func (b *Bus) IngestRaw(payload []byte) (Receipt, error) {
	h := randv2.Uint64()
	s, err := b.route(func() *shard.Shard { return b.mgr.Select(h) })
	if err != nil {
		return Receipt{}, err
	}
	ev := adapter.Event{Payload: payload, Timestamp: b.now()}
	if s.Push(ev) {
		release(s)
		return Receipt{Shard: s.ID, Timestamp: ev.Timestamp}, nil
	}
	// The cached choice is full: look at the current loads before applying
	// the backpressure policy.
	if alt := b.mgr.SelectNow(h); alt != nil && alt != s && b.acquire(alt) == nil {
		ok := alt.Push(ev)
		release(alt)
		if ok {
			release(s)
			return Receipt{Shard: alt.ID, Timestamp: ev.Timestamp}, nil
		}
	}
	err = b.pressure(s, ev)
	release(s)
	if err != nil {
		return Receipt{}, err
	}
	return Receipt{Shard: s.ID, Timestamp: ev.Timestamp}, nil
}

// Ingest ingests one event, routing it by key when it has one.
func (b *Bus) Ingest(e Event) (Receipt, error) {
	if len(e.Key) == 0 {
		return b.IngestRaw(e.Payload)
	}
	h := xxhash.Sum64(e.Key)
	s, err := b.route(func() *shard.Shard { return b.mgr.SelectKeyed(h, b.cfg.BaseShards) })
	if err != nil {
		return Receipt{}, err
	}
	defer release(s)
	ev := adapter.Event{Payload: e.Payload, Timestamp: b.now()}
	if s.Push(ev) {
		return Receipt{Shard: s.ID, Timestamp: ev.Timestamp}, nil
	}
	if err := b.pressure(s, ev); err != nil {
		return Receipt{}, err
	}
	return Receipt{Shard: s.ID, Timestamp: ev.Timestamp}, nil
}

// pressure applies the backpressure mode to ev on the full shard s.
func (b *Bus) pressure(s *shard.Shard, ev adapter.Event) error {
	bp := b.cfg.Backpressure
	// Refusals return the bare sentinels: a producer spinning on a full
	// ring must not pay an allocation per attempt.
	switch bp.Mode {
	case ModeFailProducer:
		return ErrBackpressure
	case ModeDropNewest:
		s.Rejected.Add(1)
		return ErrBackpressure
	case ModeSample:
		if n := s.Pressure.Add(1); (n-1)%bp.Rate != 0 {
			s.Rejected.Add(1)
			return ErrSampled
		}
	}
	// DropOldest, or a sampled-in event: evict until it fits. Other
	// producers may refill the freed slot, so loop.
	for !s.Push(ev) {
		if _, ok := s.Ring.TryPop(); ok {
			s.Evicted.Add(1)
		}
	}
	return nil
}

// IngestBatch ingests events, grouped per shard: keyed events go to their
// base shard, keyless ones together to one least-loaded shard, each group
// as one contiguous run in its ring. Events are accepted in order within a
// group; if a group does not fit, its tail is handled by the backpressure
// mode and the first refusal is returned alongside the receipt (which
// counts what was accepted).
func (b *Bus) IngestBatch(events []Event) (BatchReceipt, error) {
	if b.closing.Load() {
		return BatchReceipt{}, ErrClosed
	}
	ts := b.now()
	rc := BatchReceipt{Timestamp: ts, PerShard: make(map[uint16]int, 1)}
	keyed := false
	for i := range events {
		if len(events[i].Key) != 0 {
			keyed = true
			break
		}
	}
	if !keyed {
		h := randv2.Uint64()
		s, err := b.route(func() *shard.Shard { return b.mgr.Select(h) })
		if err != nil {
			return rc, err
		}
		n, err := b.pushGroup(s, ts, len(events), func(i int) []byte { return events[i].Payload })
		release(s)
		rc.Accepted, rc.PerShard[s.ID] = n, n
		return rc, err
	}
	var firstErr error
	note := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	var keyless []int
	groups := map[uint16][]int{}
	for i := range events {
		if len(events[i].Key) == 0 {
			keyless = append(keyless, i)
			continue
		}
		s := b.mgr.SelectKeyed(xxhash.Sum64(events[i].Key), b.cfg.BaseShards)
		if s == nil {
			note(ErrUnrouted)
			continue
		}
		groups[s.ID] = append(groups[s.ID], i)
	}
	if len(keyless) > 0 {
		if s := b.mgr.Select(randv2.Uint64()); s != nil {
			groups[s.ID] = append(groups[s.ID], keyless...)
		} else {
			note(ErrUnrouted)
		}
	}
	for id, idx := range groups {
		s, err := b.route(func() *shard.Shard { return b.mgr.Get(id) })
		if err != nil {
			note(err)
			continue
		}
		n, err := b.pushGroup(s, ts, len(idx), func(i int) []byte { return events[idx[i]].Payload })
		release(s)
		rc.Accepted += n
		rc.PerShard[id] += n
		note(err)
	}
	return rc, firstErr
}

// pushGroup pushes n payloads to s as contiguous runs, applying the
// backpressure mode event by event to whatever does not fit, and returns
// how many were accepted with the first refusal.
func (b *Bus) pushGroup(s *shard.Shard, ts uint64, n int, payload func(int) []byte) (int, error) {
	done, accepted := 0, 0
	var firstErr error
	for done < n {
		off := done
		k := s.Ring.PushBatchFunc(n-done, func(i int) adapter.Event {
			return adapter.Event{Payload: payload(off + i), Timestamp: ts}
		})
		if k > 0 {
			s.Ingested.Add(uint64(k))
			s.Notify()
			done += k
			accepted += k
			continue
		}
		err := b.pressure(s, adapter.Event{Payload: payload(done), Timestamp: ts})
		done++
		if err == nil {
			accepted++
			continue
		}
		if firstErr == nil {
			firstErr = err
		}
		if b.cfg.Backpressure.Mode == ModeFailProducer {
			return accepted, firstErr // the producer keeps the rest
		}
	}
	return accepted, firstErr
}

// Shards returns the live shard ids (any state), ascending: the set a
// consumer polls.
func (b *Bus) Shards() []uint16 { return b.mgr.IDs() }

// ActiveShards returns the number of Active shards.
func (b *Bus) ActiveShards() int { return b.mgr.ActiveCount() }

// ShardState returns a shard's lifecycle state.
func (b *Bus) ShardState(id uint16) (shard.State, bool) {
	s := b.mgr.Get(id)
	if s == nil {
		return 0, false
	}
	return s.State(), true
}

// Adapter returns the bus's adapter (for polling).
func (b *Bus) Adapter() adapter.Adapter { return b.adapter }
