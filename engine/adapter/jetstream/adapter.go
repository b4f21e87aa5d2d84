package jetstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/purplerain/mesh-operator/engine/adapter"
)

// Options configures the adapter.
type Options struct {
	// Prefix names streams "<Prefix>_<shard>" and subjects
	// "<lower(Prefix)>.<shard>". Default "MESH".
	Prefix string
	// Storage is the stream storage. Default file storage.
	Storage js.StorageType
	// Replicas is the stream replica count. Default 1.
	Replicas int
	// DuplicateWindow is the server-side Nats-Msg-Id window. Default 2m.
	DuplicateWindow time.Duration
	// RequestTimeout bounds each request and Healthy. Default 5s.
	RequestTimeout time.Duration
	// MaxPending bounds outstanding async publishes. Default 4096.
	MaxPending int
}

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = "MESH"
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.DuplicateWindow <= 0 {
		o.DuplicateWindow = 2 * time.Minute
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 5 * time.Second
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 4096
	}
	return o
}

// Adapter stores shards in JetStream streams.
type Adapter struct {
	opts Options
	nc   *nats.Conn
	own  bool // Close closes nc
	js   js.JetStream

	mu      sync.Mutex
	streams map[uint16]js.Stream
}

var _ adapter.Adapter = (*Adapter)(nil)

// Dial connects to url and returns an adapter that owns the connection.
func Dial(url string, opts Options) (*Adapter, error) {
	nc, err := nats.Connect(url, nats.Name("mesh-bus"))
	if err != nil {
		return nil, fmt.Errorf("jetstream adapter: connect: %w", err)
	}
	a, err := New(nc, opts)
	if err != nil {
		nc.Close()
		return nil, err
	}
	a.own = true
	return a, nil
}

// New wraps an existing connection (Close does not close it).
func New(nc *nats.Conn, opts Options) (*Adapter, error) {
	opts = opts.withDefaults()
	j, err := js.New(nc, js.WithPublishAsyncMaxPending(opts.MaxPending))
	if err != nil {
		return nil, fmt.Errorf("jetstream adapter: %w", err)
	}
	return &Adapter{opts: opts, nc: nc, js: j, streams: make(map[uint16]js.Stream)}, nil
}

// StreamName is shard's stream.
func (a *Adapter) StreamName(shard uint16) string {
	return a.opts.Prefix + "_" + strconv.Itoa(int(shard))
}

// Subject is shard's subject.
func (a *Adapter) Subject(shard uint16) string {
	return strings.ToLower(a.opts.Prefix) + "." + strconv.Itoa(int(shard))
}

// ActivateShard creates (or updates) shard's stream.
func (a *Adapter) ActivateShard(ctx context.Context, shard uint16) error {
	_, err := a.stream(ctx, shard)
	return err
}

func (a *Adapter) stream(ctx context.Context, shard uint16) (js.Stream, error) {
	a.mu.Lock()
	s, ok := a.streams[shard]
	a.mu.Unlock()
	if ok {
		return s, nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.opts.RequestTimeout)
	defer cancel()
	s, err := a.js.CreateOrUpdateStream(ctx, js.StreamConfig{
		Name:       a.StreamName(shard),
		Subjects:   []string{a.Subject(shard)},
		Storage:    a.opts.Storage,
		Replicas:   a.opts.Replicas,
		Duplicates: a.opts.DuplicateWindow,
	})
	if err != nil {
		return nil, fmt.Errorf("jetstream adapter: stream for shard %d: %w", shard, err)
	}
	a.mu.Lock()
	a.streams[shard] = s
	a.mu.Unlock()
	return s, nil
}

// OnBatch publishes every event of b and waits for all acknowledgements.
func (a *Adapter) OnBatch(ctx context.Context, b adapter.Batch) error {
	if len(b.Events) == 0 {
		return nil
	}
	if _, err := a.stream(ctx, b.Shard); err != nil {
		return err
	}
	subj := a.Subject(b.Shard)
	futs := make([]js.PubAckFuture, 0, len(b.Events))
	for i, ev := range b.Events {
		msg := &nats.Msg{Subject: subj, Data: adapter.AppendEnvelope(nil, b.Shard, ev.Timestamp, ev.Payload)}
		f, err := a.js.PublishMsgAsync(msg, js.WithMsgID(b.DedupID(i)), js.WithExpectStream(a.StreamName(b.Shard)))
		if err != nil {
			return fmt.Errorf("jetstream adapter: shard %d publish %d/%d: %w", b.Shard, i, len(b.Events), err)
		}
		futs = append(futs, f)
	}
	var errs []error
	for i, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs = append(errs, fmt.Errorf("message %d: %w", i, err))
		case <-ctx.Done():
			return fmt.Errorf("jetstream adapter: shard %d awaiting acks: %w", b.Shard, ctx.Err())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("jetstream adapter: shard %d: %d of %d not acknowledged: %w", b.Shard, len(errs), len(futs), errors.Join(errs...))
	}
	return nil
}

// PollShard reads up to limit messages of shard at or after from.
func (a *Adapter) PollShard(ctx context.Context, shard uint16, from adapter.Position, limit int) (adapter.PollResult, error) {
	res := adapter.PollResult{Next: from}
	if from.Hi != 0 {
		return res, adapter.Fatal("jetstream: shard %d: position %s is not a stream sequence", shard, from)
	}
	if limit <= 0 {
		return res, nil
	}
	s, err := a.stream(ctx, shard)
	if err != nil {
		return res, err
	}
	rctx, cancel := context.WithTimeout(ctx, a.opts.RequestTimeout)
	info, err := s.Info(rctx)
	cancel()
	if err != nil {
		return res, fmt.Errorf("jetstream adapter: shard %d info: %w", shard, err)
	}
	st := info.State
	if st.FirstSeq == 0 || st.Msgs == 0 {
		// Cold (empty) stream: nothing to walk.
		return res, nil
	}
	seq := max(from.Lo, st.FirstSeq, 1)
	want := adapter.SatLimitPlus1(limit)
	subj := a.Subject(shard)
	var events []adapter.StoredEvent
	for len(events) < want && seq <= st.LastSeq {
		rctx, cancel := context.WithTimeout(ctx, a.opts.RequestTimeout)
		m, err := s.GetMsg(rctx, seq, js.WithGetMsgSubject(subj))
		cancel()
		if errors.Is(err, js.ErrMsgNotFound) {
			break // nothing at or after seq
		}
		if err != nil {
			return adapter.PollResult{Next: from}, fmt.Errorf("jetstream adapter: shard %d get %d: %w", shard, seq, err)
		}
		ts, payload, err := adapter.DecodeEnvelope(m.Data, shard)
		if err != nil {
			return adapter.PollResult{Next: from}, fmt.Errorf("jetstream: shard %d seq %d: %w", shard, m.Sequence, err)
		}
		events = append(events, adapter.StoredEvent{
			Shard: shard, Pos: adapter.Position{Lo: m.Sequence}, Payload: payload, Timestamp: ts,
			DedupID: m.Header.Get(nats.MsgIdHdr),
		})
		next := adapter.SatAdd1(m.Sequence)
		if next == m.Sequence {
			break // saturated at the last representable sequence
		}
		seq = next
	}
	if len(events) > limit {
		res.HasMore = true
		events = events[:limit]
	}
	res.Events = events
	if n := len(events); n > 0 {
		res.Next = adapter.Position{Lo: adapter.SatAdd1(events[n-1].Pos.Lo)}.Max(from)
	}
	return res, nil
}

// ListShards returns the shards with a stream on the server, parsing the
// shard id from each stream name.
func (a *Adapter) ListShards(ctx context.Context) ([]uint16, error) {
	ctx, cancel := context.WithTimeout(ctx, a.opts.RequestTimeout)
	defer cancel()
	names := a.js.StreamNames(ctx)
	var out []uint16
	prefix := a.opts.Prefix + "_"
	for n := range names.Name() {
		rest, ok := strings.CutPrefix(n, prefix)
		if !ok {
			continue
		}
		v, err := strconv.ParseUint(rest, 10, 64)
		if err != nil {
			continue // not one of ours
		}
		id, err := ShardFromStream(v)
		if err != nil {
			return nil, fmt.Errorf("jetstream adapter: stream %s: %w", n, err)
		}
		out = append(out, id)
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("jetstream adapter: list streams: %w", err)
	}
	slices.Sort(out)
	return out, nil
}

// ShardFromStream converts a shard number read from the server, rejecting
// ids above 65 535 as fatal.
func ShardFromStream(v uint64) (uint16, error) { return adapter.CheckShardID(v) }

// Shards lists the shards this adapter has opened streams for.
func (a *Adapter) Shards() []uint16 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]uint16, 0, len(a.streams))
	for id := range a.streams {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// Flush waits until every async publish is acknowledged.
func (a *Adapter) Flush(ctx context.Context) error {
	select {
	case <-a.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("jetstream adapter flush: %w", ctx.Err())
	}
}

// Healthy checks the connection and a JetStream round trip, bounded by
// RequestTimeout.
func (a *Adapter) Healthy(ctx context.Context) bool {
	if !a.nc.IsConnected() {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, a.opts.RequestTimeout)
	defer cancel()
	_, err := a.js.AccountInfo(ctx)
	return err == nil
}

// Close closes the connection if the adapter dialled it.
func (a *Adapter) Close() error {
	if a.own {
		a.nc.Close()
	}
	return nil
}
