package redis

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/purplerain/mesh-operator/engine/adapter"
)

// Options configures the adapter.
type Options struct {
	// Prefix names shard streams "<Prefix>:<shard>". Default "mesh:shard".
	Prefix string
	// CommandTimeout bounds every command and Healthy. Default 5s.
	CommandTimeout time.Duration
	// MaxLen, if set, trims each stream approximately to this length on
	// every XADD.
	MaxLen int64
}

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = "mesh:shard"
	}
	if o.CommandTimeout <= 0 {
		o.CommandTimeout = 5 * time.Second
	}
	return o
}

// Adapter stores shards in Redis streams.
type Adapter struct {
	opts Options
	rdb  goredis.UniversalClient
	own  bool

	mu     sync.Mutex
	shards map[uint16]struct{}
}

var _ adapter.Adapter = (*Adapter)(nil)

// Dial connects to addr ("host:port") and returns an adapter owning the
// client.
func Dial(addr string, opts Options) *Adapter {
	opts = opts.withDefaults()
	rdb := goredis.NewClient(&goredis.Options{
		Addr: addr, ReadTimeout: opts.CommandTimeout, WriteTimeout: opts.CommandTimeout,
		DialTimeout: opts.CommandTimeout,
	})
	a := New(rdb, opts)
	a.own = true
	return a
}

// New wraps an existing client (Close does not close it).
func New(rdb goredis.UniversalClient, opts Options) *Adapter {
	return &Adapter{opts: opts.withDefaults(), rdb: rdb, shards: make(map[uint16]struct{})}
}

// Key is shard's stream key.
func (a *Adapter) Key(shard uint16) string { return a.opts.Prefix + ":" + strconv.Itoa(int(shard)) }

// OnBatch writes b with one pipelined round of XADDs.
func (a *Adapter) OnBatch(ctx context.Context, b adapter.Batch) error {
	if len(b.Events) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.opts.CommandTimeout)
	defer cancel()
	key := a.Key(b.Shard)
	pipe := a.rdb.Pipeline()
	for i, ev := range b.Events {
		args := &goredis.XAddArgs{
			Stream: key,
			Values: []any{"d", b.DedupID(i), "e", adapter.AppendEnvelope(nil, b.Shard, ev.Timestamp, ev.Payload)},
		}
		if a.opts.MaxLen > 0 {
			args.MaxLen, args.Approx = a.opts.MaxLen, true
		}
		pipe.XAdd(ctx, args)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("redis adapter: shard %d: pipelined XADD of %d: %w", b.Shard, len(b.Events), err)
	}
	a.mu.Lock()
	a.shards[b.Shard] = struct{}{}
	a.mu.Unlock()
	return nil
}

// PollShard reads up to limit entries of shard at or after from.
func (a *Adapter) PollShard(ctx context.Context, shard uint16, from adapter.Position, limit int) (adapter.PollResult, error) {
	res := adapter.PollResult{Next: from}
	if limit <= 0 {
		return res, nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.opts.CommandTimeout)
	defer cancel()
	want := adapter.SatLimitPlus1(limit)
	msgs, err := a.rdb.XRangeN(ctx, a.Key(shard), streamID(from), "+", int64(want)).Result()
	if err != nil {
		return res, fmt.Errorf("redis adapter: shard %d XRANGE: %w", shard, err)
	}
	if len(msgs) > limit {
		res.HasMore = true
		msgs = msgs[:limit]
	}
	events := make([]adapter.StoredEvent, 0, len(msgs))
	for _, m := range msgs {
		pos, err := parseID(m.ID)
		if err != nil {
			return adapter.PollResult{Next: from}, adapter.Fatal("redis: shard %d: %w", shard, err)
		}
		env, ok := m.Values["e"].(string)
		if !ok {
			return adapter.PollResult{Next: from}, adapter.Fatal("redis: shard %d entry %s: missing envelope field", shard, m.ID)
		}
		ts, payload, err := adapter.DecodeEnvelope([]byte(env), shard)
		if err != nil {
			return adapter.PollResult{Next: from}, fmt.Errorf("redis: shard %d entry %s: %w", shard, m.ID, err)
		}
		d, _ := m.Values["d"].(string)
		events = append(events, adapter.StoredEvent{Shard: shard, Pos: pos, Payload: payload, Timestamp: ts, DedupID: d})
	}
	res.Events = events
	if n := len(events); n > 0 {
		res.Next = events[n-1].Pos.Next().Max(from)
	}
	return res, nil
}

// streamID renders a position as an inclusive XRANGE start.
func streamID(p adapter.Position) string {
	return strconv.FormatUint(p.Hi, 10) + "-" + strconv.FormatUint(p.Lo, 10)
}

// parseID parses a Redis stream id "ms-seq".
func parseID(id string) (adapter.Position, error) {
	ms, seq, ok := strings.Cut(id, "-")
	if !ok {
		return adapter.Position{}, fmt.Errorf("malformed stream id %q", id)
	}
	hi, err := strconv.ParseUint(ms, 10, 64)
	if err != nil {
		return adapter.Position{}, fmt.Errorf("malformed stream id %q: %w", id, err)
	}
	lo, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return adapter.Position{}, fmt.Errorf("malformed stream id %q: %w", id, err)
	}
	return adapter.Position{Hi: hi, Lo: lo}, nil
}

// Shards lists the shards this adapter has written to.
func (a *Adapter) Shards() []uint16 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]uint16, 0, len(a.shards))
	for id := range a.shards {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// Flush returns at once: OnBatch returns only after Redis replied.
func (a *Adapter) Flush(context.Context) error { return nil }

// Healthy sends PING, bounded by CommandTimeout.
func (a *Adapter) Healthy(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, a.opts.CommandTimeout)
	defer cancel()
	return a.rdb.Ping(ctx).Err() == nil
}

// Close closes the client if the adapter dialled it.
func (a *Adapter) Close() error {
	if a.own {
		return a.rdb.Close()
	}
	return nil
}
