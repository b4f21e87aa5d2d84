package client

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/purplerain/mesh-operator/engine/consumer"
	"github.com/purplerain/mesh-operator/node/dataapi"
)

// Poller reads every shard of the cluster with one composite cursor. Each
// node serves the shards it owns and advances only their positions; the
// poller merges the answers, and a position never moves backwards (a stale
// answer cannot rewind it). A shard that moves to another owner keeps its
// sequence numbers, so its position stays valid there.
type Poller struct {
	c *Client

	mu     sync.Mutex
	cursor *consumer.Cursor
}

// Page is one Poll result.
type Page struct {
	Events []dataapi.StoredEvent
	// HasMore reports that some shard holds events past the cursor.
	HasMore bool
	// TruncatedAtPerShardCap and StalledShards are the nodes' flags,
	// combined.
	TruncatedAtPerShardCap bool
	StalledShards          []uint16
}

// NewPoller starts at cursor ("" = the beginning of every shard).
func (c *Client) NewPoller(cursor string) (*Poller, error) {
	cur, err := consumer.Decode(cursor)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return &Poller{c: c, cursor: cur}, nil
}

// Cursor is the encoded position after everything returned so far.
func (p *Poller) Cursor() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cursor.Encode()
}

// Poll returns the next page of at most limit events from every owner. A
// node that cannot be reached is skipped for this page after a topology
// refresh (its shards show up in HasMore once it is back); a refusal such as
// behind_retention is returned as an error. A page that finds every owner
// caught up refreshes a topology older than Options.TopologyMaxAge and
// reports HasMore when the epoch changed, so shards added or moved to
// members not polled before are read too.
func (p *Poller) Poll(ctx context.Context, limit int) (Page, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var page Page
	t := p.c.Topology()
	var owners []string
	for _, s := range t.Shards {
		if m, ok := t.Member(s.Owner); ok && !slices.Contains(owners, m.Data) {
			owners = append(owners, m.Data)
		}
	}
	unreachable := false
	for _, addr := range owners {
		if len(page.Events) >= limit {
			page.HasMore = true
			break
		}
		encoded, err := p.cursor.Encode()
		if err != nil {
			return page, fmt.Errorf("client: %w", err)
		}
		resp, err := p.c.pollPage(ctx, addr, encoded, limit-len(page.Events))
		if err != nil {
			if retriable(err) {
				unreachable = true
				continue
			}
			return page, err
		}
		next, err := consumer.Decode(resp.Cursor)
		if err != nil {
			return page, fmt.Errorf("client: %s answered a bad cursor: %w", addr, err)
		}
		for _, s := range next.Shards() {
			p.cursor.Advance(s, next.Position(s))
		}
		page.Events = append(page.Events, resp.Events...)
		page.HasMore = page.HasMore || resp.HasMore
		page.TruncatedAtPerShardCap = page.TruncatedAtPerShardCap || resp.TruncatedAtPerShardCap
		page.StalledShards = append(page.StalledShards, resp.StalledShards...)
	}
	if unreachable {
		page.HasMore = true
		_ = p.c.Refresh(ctx)
	} else if len(page.Events) == 0 && !page.HasMore {
		// Every owner polled is caught up, but the topology may be stale:
		// a shard added, moved or promoted to another member is read
		// only once the topology names it. The refresh is the one writes
		// use (coalesced, at most one per TopologyMaxAge). A newer epoch
		// means more may be there (the caller polls again instead of
		// stopping).
		p.c.refreshIfStale(ctx)
		if p.c.Topology().Epoch != t.Epoch {
			page.HasMore = true
		}
	}
	return page, nil
}
