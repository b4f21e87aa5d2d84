// Package consumer reads the bus's shards back: Poll merges one page of
// events from every live shard and tracks where each shard left off in a
// composite cursor.
//
// Invariants (pinned by tests named after them):
//
//   - Poll reads the live shard set the Source reports at the time of the
//     call (shards added or removed since the last poll are picked up), not
//     a range fixed when the consumer was made. A poll operates on the
//     topology snapshot it read at its start.
//   - The composite cursor keeps one position per shard and never moves a
//     position backwards (Advance ignores older positions), so a stale or
//     replayed poll result cannot rewind a consumer.
//   - Encode returns an error instead of an empty string: an empty cursor
//     would silently restart consumption from the beginning. The encoding
//     of an empty cursor is itself non-empty.
//   - Decode accepts only the canonical encoding (known version, shards
//     strictly ascending, no trailing bytes).
//   - A shard is fetched with at most perShardFetchCap events per poll;
//     when the request asked for more, the response says
//     TruncatedAtPerShardCap instead of silently returning less.
//   - A shard whose store reports more data but returns none is listed in
//     StalledShards rather than silently hiding its HasMore.
//   - Events filtered out still advance the cursor (they were examined),
//     and a filter does not widen the fetch, so a filtered page may hold
//     fewer than Limit events with HasMore set;
//     events fetched but not examined because the page filled do not, and
//     make HasMore true.
package consumer
