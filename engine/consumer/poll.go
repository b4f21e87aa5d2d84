package consumer

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/purplerain/mesh-operator/engine/adapter"
)

// perShardFetchCap bounds how many events one poll fetches from a shard.
// It is deliberately unexported: callers read TruncatedAtPerShardCap.
const perShardFetchCap = 10_000

// DefaultLimit is used when Request.Limit is not positive.
const DefaultLimit = 100

// Source is what Poll reads: the live shard set and per-shard reads.
type Source interface {
	// Shards returns the live shard ids at the time of the call.
	Shards() []uint16
	PollShard(ctx context.Context, shard uint16, from adapter.Position, limit int) (adapter.PollResult, error)
}

// Ordering selects how shards are merged into one page.
type Ordering int

const (
	// ByShard returns shard 0's events, then shard 1's, and so on.
	ByShard Ordering = iota
	// ByTimestamp merges shards by event timestamp (ties by shard id),
	// keeping each shard's own order.
	ByTimestamp
)

// Request is one poll.
type Request struct {
	// Limit is the most events returned. Default DefaultLimit.
	Limit int
	// Cursor is an encoded cursor from a previous Response ("" = start).
	Cursor string
	// Shards restricts the poll to these live shards (nil = all).
	Shards []uint16
	// Filter, if set, keeps only events for which it returns true.
	// Filtered-out events still advance the cursor.
	Filter func(adapter.StoredEvent) bool
	Order  Ordering
}

// Response is one page.
type Response struct {
	Events []adapter.StoredEvent
	// Cursor resumes after this page.
	Cursor string
	// HasMore reports that some shard holds events past Cursor.
	HasMore bool
	// TruncatedAtPerShardCap reports that Limit exceeded the per-shard
	// fetch cap, so shards were read with a smaller page than asked.
	TruncatedAtPerShardCap bool
	// StalledShards lists shards whose store reported more data but
	// returned none.
	StalledShards []uint16
}

type fetched struct {
	shard uint16
	res   adapter.PollResult
	used  int // events examined
}

// Poll reads one page from src. It reads the live shard set once at the
// start and works on that snapshot.
func Poll(ctx context.Context, src Source, req Request) (Response, error) {
	cur, err := Decode(req.Cursor)
	if err != nil {
		return Response{}, err
	}
	limit := req.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	var resp Response
	perShard := limit
	if perShard > perShardFetchCap {
		perShard = perShardFetchCap
		resp.TruncatedAtPerShardCap = true
	}
	shards := src.Shards()
	if req.Shards != nil {
		want := make(map[uint16]bool, len(req.Shards))
		for _, id := range req.Shards {
			want[id] = true
		}
		shards = slices.DeleteFunc(slices.Clone(shards), func(id uint16) bool { return !want[id] })
	}
	slices.Sort(shards)

	fs := make([]*fetched, 0, len(shards))
	for _, id := range shards {
		res, err := src.PollShard(ctx, id, cur.Position(id), perShard)
		if err != nil {
			return Response{}, fmt.Errorf("consumer: poll shard %d: %w", id, err)
		}
		if res.HasMore && len(res.Events) == 0 {
			resp.StalledShards = append(resp.StalledShards, id)
		}
		fs = append(fs, &fetched{shard: id, res: res})
	}

	examine := func(f *fetched) bool {
		e := f.res.Events[f.used]
		f.used++
		cur.Advance(f.shard, e.Pos.Next())
		if req.Filter == nil || req.Filter(e) {
			resp.Events = append(resp.Events, e)
		}
		return len(resp.Events) < limit
	}
	switch req.Order {
	case ByTimestamp:
		for more := true; more; {
			var best *fetched
			for _, f := range fs {
				if f.used == len(f.res.Events) {
					continue
				}
				if best == nil || cmp.Compare(f.res.Events[f.used].Timestamp, best.res.Events[best.used].Timestamp) < 0 {
					best = f
				}
			}
			if best == nil {
				break
			}
			more = examine(best)
		}
	default:
	outer:
		for _, f := range fs {
			for f.used < len(f.res.Events) {
				if !examine(f) {
					break outer
				}
			}
		}
	}
	for _, f := range fs {
		if f.used == len(f.res.Events) {
			// Everything fetched was examined: the store's Next also covers
			// gaps after the last event.
			cur.Advance(f.shard, f.res.Next)
			resp.HasMore = resp.HasMore || f.res.HasMore
		} else {
			resp.HasMore = true
		}
	}
	if resp.Cursor, err = cur.Encode(); err != nil {
		return Response{}, err
	}
	return resp, nil
}
