package redex

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	"github.com/purplerain/mesh-operator/engine/adapter"
	store "github.com/purplerain/mesh-operator/engine/redex"
)

// ErrBehindRetention is returned by PollShard for a position older than
// the shard log's first retained entry.
var ErrBehindRetention = errors.New("redex adapter: position behind retention")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("redex adapter: closed")

// Options configures the adapter.
type Options struct {
	// Dir enables disk mode: shard n's log lives in Dir/shard-n. Empty
	// keeps every log in memory.
	Dir string
	// Log is the template for every shard's log options (fsync policy,
	// retention, segment size...). Name and Dir are set per shard.
	Log store.Options
	// SyncOnFlush makes Flush fsync every disk-mode log.
	SyncOnFlush bool
}

// Adapter appends shard batches to per-shard RedEX logs.
type Adapter struct {
	opts Options

	mu     sync.RWMutex
	logs   map[uint16]*store.Log
	closed bool

	scratch sync.Pool // *[][]byte
}

var _ adapter.Adapter = (*Adapter)(nil)

// New returns an adapter; logs are opened on first use or ActivateShard.
func New(opts Options) *Adapter {
	a := &Adapter{opts: opts, logs: make(map[uint16]*store.Log)}
	a.scratch.New = func() any { s := make([][]byte, 0, 256); return &s }
	return a
}

// ActivateShard opens shard's log (idempotent). The bus calls it before
// the shard becomes routable.
func (a *Adapter) ActivateShard(_ context.Context, shard uint16) error {
	_, err := a.logFor(shard)
	return err
}

// Log returns shard's log, opening it if needed.
func (a *Adapter) Log(shard uint16) (*store.Log, error) { return a.logFor(shard) }

// Shards lists the shards with an open log.
func (a *Adapter) Shards() []uint16 {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make([]uint16, 0, len(a.logs))
	for id := range a.logs {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func (a *Adapter) logFor(shard uint16) (*store.Log, error) {
	a.mu.RLock()
	l, ok := a.logs[shard]
	closed := a.closed
	a.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	if ok {
		return l, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, ErrClosed
	}
	if l, ok := a.logs[shard]; ok {
		return l, nil
	}
	o := a.opts.Log
	o.Name = "shard-" + strconv.Itoa(int(shard))
	if a.opts.Dir != "" {
		o.Dir = filepath.Join(a.opts.Dir, o.Name)
	} else {
		o.Dir = ""
	}
	l, err := store.Open(o)
	if err != nil {
		// A log that cannot be opened will not open on retry either.
		return nil, adapter.Fatal("open shard %d log: %w", shard, err)
	}
	a.logs[shard] = l
	return l, nil
}

// OnBatch appends b's payloads to its shard's log in one AppendBatch.
func (a *Adapter) OnBatch(_ context.Context, b adapter.Batch) error {
	if len(b.Events) == 0 {
		return nil
	}
	l, err := a.logFor(b.Shard)
	if err != nil {
		return err
	}
	sp := a.scratch.Get().(*[][]byte)
	ps := (*sp)[:0]
	for i := range b.Events {
		ps = append(ps, b.Events[i].Payload)
	}
	_, _, err = l.AppendBatch(ps)
	clear(ps)
	*sp = ps[:0]
	a.scratch.Put(sp)
	if err != nil {
		var tooLarge *store.PayloadTooLargeError
		if errors.As(err, &tooLarge) || errors.Is(err, store.ErrClosed) {
			return adapter.Fatal("shard %d append: %w", b.Shard, err)
		}
		return fmt.Errorf("shard %d append: %w", b.Shard, err)
	}
	return nil
}

// PollShard reads up to limit entries of shard at or after from.
func (a *Adapter) PollShard(_ context.Context, shard uint16, from adapter.Position, limit int) (adapter.PollResult, error) {
	if from.Hi != 0 {
		return adapter.PollResult{}, adapter.Fatal("shard %d: position %s is not a RedEX sequence", shard, from)
	}
	if limit <= 0 {
		return adapter.PollResult{Next: from}, nil
	}
	l, err := a.logFor(shard)
	if err != nil {
		return adapter.PollResult{}, err
	}
	entries, err := l.Read(from.Lo, adapter.SatLimitPlus1(limit))
	if err != nil {
		if errors.Is(err, store.ErrPruned) {
			return adapter.PollResult{}, fmt.Errorf("shard %d from %d (first retained %d): %w", shard, from.Lo, l.FirstSeq(), ErrBehindRetention)
		}
		return adapter.PollResult{}, fmt.Errorf("shard %d read: %w", shard, err)
	}
	res := adapter.PollResult{Next: from}
	if len(entries) > limit {
		res.HasMore = true
		entries = entries[:limit]
	}
	res.Events = make([]adapter.StoredEvent, len(entries))
	for i, e := range entries {
		res.Events[i] = adapter.StoredEvent{
			Shard: shard, Pos: adapter.Position{Lo: e.Seq}, Payload: e.Payload, Timestamp: uint64(e.Time),
		}
	}
	if n := len(entries); n > 0 {
		res.Next = adapter.Position{Lo: adapter.SatAdd1(entries[n-1].Seq)}.Max(from)
	}
	return res, nil
}

// Flush returns at once (appends are synchronous) unless SyncOnFlush is
// set, in which case it fsyncs every disk-mode log.
func (a *Adapter) Flush(context.Context) error {
	if !a.opts.SyncOnFlush || a.opts.Dir == "" {
		return nil
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	for id, l := range a.logs {
		if err := l.Sync(); err != nil {
			return fmt.Errorf("sync shard %d: %w", id, err)
		}
	}
	return nil
}

// Healthy reports whether the adapter is open.
func (a *Adapter) Healthy(context.Context) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return !a.closed
}

// Close closes every log.
func (a *Adapter) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	var errs []error
	for id, l := range a.logs {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close shard %d: %w", id, err))
		}
	}
	return errors.Join(errs...)
}
