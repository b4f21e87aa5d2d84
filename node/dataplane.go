package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/purplerain/mesh-operator/engine/adapter"
	redexadapter "github.com/purplerain/mesh-operator/engine/adapter/redex"
	"github.com/purplerain/mesh-operator/engine/bus"
	"github.com/purplerain/mesh-operator/engine/consumer"
	"github.com/purplerain/mesh-operator/engine/redex"
	"github.com/purplerain/mesh-operator/engine/rules"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/topology"
)

// ReplicaWaiter is what ackPolicy Standby waits on: the owner side of
// replication, which knows how far each follower has appended.
type ReplicaWaiter interface {
	// WaitReplicated returns once at least one follower appended shard's
	// entry seq.
	WaitReplicated(ctx context.Context, shard uint16, seq uint64) error
}

// storeOptions maps the node configuration onto the log registry's
// options.
func storeOptions(cfg *nodeconfig.Config) redexadapter.Options {
	opts := redexadapter.Options{}
	if cfg == nil {
		return opts
	}
	r := cfg.Retention
	opts.Log.Retention = redex.Retention{MaxAge: r.MaxAge.Duration}
	if r.MaxEvents > 0 {
		opts.Log.Retention.MaxEvents = uint64(r.MaxEvents)
	}
	if r.MaxBytes > 0 {
		opts.Log.Retention.MaxBytes = uint64(r.MaxBytes)
	}
	if cfg.Storage.Mode == "Disk" {
		opts.Dir = cfg.Storage.Dir
		switch cfg.Storage.Fsync {
		case "EveryN":
			opts.Log.Fsync = redex.EveryN(uint64(cfg.Storage.FsyncEveryN))
		case "Interval":
			opts.Log.Fsync = redex.Interval(cfg.Storage.FsyncInterval.Duration)
		}
	}
	return opts
}

// newBus is the node bus: no base shards (the node adds the shards it
// owns), and producers that find a ring full get backpressure instead of
// evicting acknowledged-to-be events.
func newBus(logs *redexadapter.Adapter, logger *slog.Logger) (*bus.Bus, error) {
	return bus.New(logs, bus.Config{
		NoBaseShards: true,
		MaxShards:    1 << 16,
		RingCapacity: busRingCapacity, // fill ratios (status.go) are relative to it
		Backpressure: bus.FailProducer(),
		Batch:        bus.BatchConfig{Min: 1, Max: 4096, MaxDelay: 200 * time.Microsecond},
		Logger:       logger,
	})
}

// syncShards makes the node bus hold exactly the shards this node owns in
// t. Shards it stops owning are drained and removed (their logs stay: a
// follower keeps replicating into them); shards it gains are added and
// activated. Callers hold applyMu.
func (n *Node) syncShards(ctx context.Context, t *topology.Topology) error {
	want := t.OwnedBy(n.name)
	have := n.bus.Shards()
	var errs []error
	for _, id := range have {
		if !slices.Contains(want, id) {
			if err := n.bus.RemoveShard(ctx, id); err != nil {
				errs = append(errs, fmt.Errorf("release shard %d: %w", id, err))
			}
		}
	}
	for _, id := range want {
		if !slices.Contains(have, id) {
			if err := n.bus.AddShard(id); err != nil {
				errs = append(errs, fmt.Errorf("acquire shard %d: %w", id, err))
			}
		}
	}
	// Followed shards need their logs open for replication.
	for _, id := range t.FollowedBy(n.name) {
		if _, err := n.logs.Log(id); err != nil {
			errs = append(errs, fmt.Errorf("open followed shard %d: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// Ingest implements dataapi.Backend: it routes every event, refuses the
// whole request if any event belongs to a shard this node may not write,
// then appends through the node bus and acknowledges under the ack policy.
//
// A refusal for a fence, a move or another owner means nothing was
// appended: the writable check and the append happen under appendGate,
// which a new topology epoch waits for, so a fence or cutover is installed
// either before the check (refused, nothing appended) or after the events
// are in the log (acknowledged; the handoff carries the fenced log whole).
// The answers that may follow an append are the ambiguous ones, which the
// SDK resends like a broken connection: lease_expired when the lease ran
// out during the append or, under ackPolicy Standby, before a follower
// had the events, a failed Standby wait, a batch refused part way
// (backpressure on a later event), and the context ending.
func (n *Node) Ingest(ctx context.Context, events []dataapi.Event) ([]dataapi.Ack, error) {
	acks, touched, leaseUntil, err := n.appendEvents(ctx, events)
	if err != nil {
		return nil, err
	}
	if n.ackStandby {
		if err := n.waitReplicated(ctx, touched); err != nil {
			return nil, err
		}
		// Acknowledge if the lease the events were appended under still
		// holds, whatever the topology says now: a fence, a move or a
		// drain installed while they waited for a follower must not
		// refuse them ("moving" and "not owner" tell the SDK nothing was
		// stored, and its resend would store them twice). That is safe,
		// because another owner of the shard can only have come after
		// the append in one of two ways:
		//   - a handoff, which carries the fenced log whole: the fence's
		//     epoch waited for this append (appendGate), and the cutover
		//     comes only once the new owner caught up with the fenced
		//     log, so the new owner holds these events;
		//   - a promotion without a handoff (failover), which waits out
		//     this node's lease: the operator stops renewing it and waits
		//     a lease past the latest time a push may have renewed it
		//     (controllers/leases.go, LeaseFrom), which is no earlier than
		//     when this node set leaseUntil, so the wait lasts at least
		//     until leaseUntil. Before leaseUntil no one else was
		//     promoted, so the follower that acknowledged the events had
		//     them while this node was still the owner.
		// Past leaseUntil a promotion may have come first and this node's
		// word no longer counts: lease_expired, which the SDK resends. The
		// deadline must be the one read at the append, never a later one:
		// a renewal since (at a later epoch, perhaps one where another
		// node owns the shard and was since failed over) says nothing
		// about the epoch the events went into.
		if !n.now().Before(leaseUntil) {
			return nil, fmt.Errorf("appended and replicated but not acknowledged: %w", ErrLeaseExpired)
		}
	}
	return acks, nil
}

// appendEvents checks and appends events under appendGate (see Ingest)
// and returns their acks, the shards they went to and the deadline of the
// lease they were appended under.
func (n *Node) appendEvents(ctx context.Context, events []dataapi.Event) ([]dataapi.Ack, map[uint16]bool, time.Time, error) {
	var none time.Time
	n.appendGate.RLock()
	defer n.appendGate.RUnlock()
	t := n.Topology()
	if t == nil {
		return nil, nil, none, ErrNoTopology
	}
	shards := make([]int, len(events)) // -1: keyless
	for i, e := range events {
		shards[i] = -1
		if len(e.Key) > 0 {
			id := topology.KeyShard(e.Key, t.BaseShards)
			if err := n.CheckWritable(id); err != nil {
				return nil, nil, none, err
			}
			shards[i] = int(id)
		}
	}
	var keyless []uint16
	if slices.Contains(shards, -1) {
		var err error
		if keyless, err = n.writableShards(); err != nil {
			return nil, nil, none, err
		}
	}
	// Behaviour rules come after routing, so a request this node would
	// refuse anyway (retriable elsewhere) spends no rate budget, and before
	// any append, so a rejected request leaves nothing behind.
	if err := n.checkRules(events); err != nil {
		return nil, nil, none, err
	}
	tickets := make([]bus.Ticket, len(events))
	for i, e := range events {
		id := shards[i]
		if id < 0 {
			id = int(n.leastLoaded(keyless))
		}
		var err error
		tickets[i], err = n.bus.IngestTo(uint16(id), e.Payload)
		if err != nil {
			// Events already accepted are appended but not acknowledged; the
			// client retries the batch (at-least-once).
			// TODO(issue 7): reserve ring room for the whole batch first,
			// so backpressure refuses a batch before any of it is appended.
			return nil, nil, none, n.ingestError(err)
		}
	}
	acks := make([]dataapi.Ack, len(events))
	touched := map[uint16]bool{}
	for i, tk := range tickets {
		if err := n.bus.WaitDispatched(ctx, tk); err != nil {
			return nil, nil, none, n.ingestError(err)
		}
		acks[i] = dataapi.Ack{Shard: tk.Shard}
		touched[tk.Shard] = true
	}
	// Acknowledge only inside the lease: past it another owner may have
	// been promoted, and this node's word no longer counts. The gate is
	// still held, so the lease is the one of the epoch the events were
	// appended in (a new epoch would reset it); Ingest checks the same
	// deadline again after a Standby wait. A fence, a move or a drain
	// cannot refuse them any more: they are in the log before it.
	leaseUntil := n.leaseDeadline()
	if !n.now().Before(leaseUntil) {
		return nil, nil, none, fmt.Errorf("appended but not acknowledged: %w", ErrLeaseExpired)
	}
	return acks, touched, leaseUntil, nil
}

// checkRules evaluates the behaviour rules over the request's payloads;
// any failing event refuses the whole request.
func (n *Node) checkRules(events []dataapi.Event) error {
	if n.rules.Len() == 0 {
		return nil
	}
	payloads := make([][]byte, len(events))
	for i, e := range events {
		payloads[i] = e.Payload
	}
	v := n.rules.Evaluate(payloads)
	if v.Kind == rules.Accept {
		return nil
	}
	return &RuleRejectedError{Rule: v.Rule(), Rules: v.Rules, RateLimited: v.Kind == rules.RateLimited}
}

// waitReplicated waits until a follower has everything appended so far to
// each touched shard: the log's last seq is at or after every event of
// this request.
func (n *Node) waitReplicated(ctx context.Context, touched map[uint16]bool) error {
	n.replMu.Lock()
	replicas := n.replicas
	n.replMu.Unlock()
	if replicas == nil {
		return errors.New("node: ackPolicy Standby but replication is not running")
	}
	for id := range touched {
		l, err := n.logs.Log(id)
		if err != nil {
			return err
		}
		next := l.NextSeq()
		if next == 0 {
			continue
		}
		if err := replicas.WaitReplicated(ctx, id, next-1); err != nil {
			return fmt.Errorf("shard %d: wait for a standby: %w", id, err)
		}
	}
	return nil
}

// writableShards lists the owned shards that accept writes now (not
// fenced for a handoff), for keyless events.
func (n *Node) writableShards() ([]uint16, error) {
	t := n.Topology()
	if t == nil {
		return nil, ErrNoTopology
	}
	var out []uint16
	var firstErr error
	for _, id := range t.OwnedBy(n.name) {
		if err := n.CheckWritable(id); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		out = append(out, id)
	}
	if len(out) == 0 {
		if firstErr == nil {
			firstErr = &NotOwnerError{} // owns nothing: the client picks another node
		}
		return nil, firstErr
	}
	return out, nil
}

// leastLoaded picks the candidate whose ring holds the fewest events,
// starting the scan at a random candidate so ties spread (the bus's own
// least-loaded selection, restricted to writable shards).
func (n *Node) leastLoaded(candidates []uint16) uint16 {
	start := rand.IntN(len(candidates))
	best, bestLoad := candidates[start], int(^uint(0)>>1)
	for i := range candidates {
		id := candidates[(start+i)%len(candidates)]
		if load, ok := n.bus.ShardLoad(id); ok && load < bestLoad {
			best, bestLoad = id, load
		}
	}
	return best
}

func (n *Node) ingestError(err error) error {
	switch {
	case errors.Is(err, bus.ErrBackpressure):
		return fmt.Errorf("%w: %v", ErrBackpressure, err)
	case errors.Is(err, bus.ErrUnrouted), errors.Is(err, bus.ErrClosed):
		return fmt.Errorf("%w: %v", ErrShardMoving, err)
	case errors.Is(err, bus.ErrNotDispatched):
		return fmt.Errorf("%w: %v", ErrShardMoving, err)
	}
	return err
}

// ownedSource is the consumer's view: the shards this node owns, read from
// their logs.
type ownedSource struct {
	logs  *redexadapter.Adapter
	owned []uint16
}

func (s ownedSource) Shards() []uint16 { return s.owned }

func (s ownedSource) PollShard(ctx context.Context, id uint16, from adapter.Position, limit int) (adapter.PollResult, error) {
	return s.logs.PollShard(ctx, id, from, limit)
}

// Poll implements dataapi.Backend over the shards this node owns.
func (n *Node) Poll(ctx context.Context, req dataapi.PollRequest) (dataapi.PollResponse, error) {
	t := n.Topology()
	if t == nil {
		return dataapi.PollResponse{}, ErrNoTopology
	}
	owned := t.OwnedBy(n.name)
	resp, err := consumer.Poll(ctx, ownedSource{logs: n.logs, owned: owned}, consumer.Request{Limit: req.Limit, Cursor: req.Cursor, Shards: owned})
	if err != nil {
		if errors.Is(err, redexadapter.ErrBehindRetention) {
			return dataapi.PollResponse{}, fmt.Errorf("%w: %v", ErrBehindRetention, err)
		}
		return dataapi.PollResponse{}, err
	}
	out := dataapi.PollResponse{
		Cursor: resp.Cursor, HasMore: resp.HasMore,
		TruncatedAtPerShardCap: resp.TruncatedAtPerShardCap, StalledShards: resp.StalledShards,
		Events: make([]dataapi.StoredEvent, len(resp.Events)),
	}
	for i, e := range resp.Events {
		out.Events[i] = dataapi.StoredEvent{Shard: e.Shard, Seq: e.Pos.Lo, Time: int64(e.Timestamp), Payload: e.Payload}
	}
	return out, nil
}

// Log returns the local log of shard id (owned or followed), opening it if
// needed. Replication reads and appends through it.
func (n *Node) Log(id uint16) (*redex.Log, error) { return n.logs.Log(id) }

// sweepRetention applies retention to every local log.
func (n *Node) sweepRetention(now time.Time) {
	for _, id := range n.logs.Shards() {
		l, err := n.logs.Log(id)
		if err != nil {
			continue
		}
		if _, err := l.Sweep(now); err != nil {
			n.logger.Warn("retention sweep failed", "shard", id, "err", err)
		}
	}
}

// RunRetention sweeps every interval until ctx ends.
func (n *Node) RunRetention(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n.sweepRetention(now)
		}
	}
}
