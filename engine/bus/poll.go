package bus

import (
	"context"
	"slices"

	"github.com/purplerain/mesh-operator/engine/adapter"
	"github.com/purplerain/mesh-operator/engine/consumer"
)

// ShardLister is implemented by adapters that can list the shards they
// hold data for (the RedEX adapter does).
type ShardLister interface {
	Shards() []uint16
}

// LiveShards is the consumer's view of the shard set: every shard the bus
// holds (any state) plus every shard the adapter still stores data for, so
// a shard that was scaled down stays readable.
func (b *Bus) LiveShards() []uint16 {
	ids := b.mgr.IDs()
	if l, ok := b.adapter.(ShardLister); ok {
		ids = append(ids, l.Shards()...)
		slices.Sort(ids)
		ids = slices.Compact(ids)
	}
	return ids
}

// Poll reads one page across the live shard set (see package consumer).
func (b *Bus) Poll(ctx context.Context, req consumer.Request) (consumer.Response, error) {
	return consumer.Poll(ctx, busSource{b}, req)
}

type busSource struct{ b *Bus }

func (s busSource) Shards() []uint16 { return s.b.LiveShards() }

func (s busSource) PollShard(ctx context.Context, shard uint16, from adapter.Position, limit int) (adapter.PollResult, error) {
	return s.b.adapter.PollShard(ctx, shard, from, limit)
}
