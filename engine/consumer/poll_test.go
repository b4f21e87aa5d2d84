package consumer_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"

	"go.uber.org/goleak"

	"github.com/purplerain/mesh-operator/engine/adapter"
	redexadapter "github.com/purplerain/mesh-operator/engine/adapter/redex"
	"github.com/purplerain/mesh-operator/engine/bus"
	"github.com/purplerain/mesh-operator/engine/consumer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// source is a real RedEX adapter with an explicit live shard set.
type source struct {
	*redexadapter.Adapter
	live    []uint16
	stalled map[uint16]bool // shards whose store pretends to be stuck
}

func (s *source) Shards() []uint16 { return s.live }

func (s *source) PollShard(ctx context.Context, id uint16, from adapter.Position, limit int) (adapter.PollResult, error) {
	if s.stalled[id] {
		return adapter.PollResult{Next: from, HasMore: true}, nil
	}
	return s.Adapter.PollShard(ctx, id, from, limit)
}

func newSource(t *testing.T, perShard map[uint16]int) *source {
	t.Helper()
	a := redexadapter.New(redexadapter.Options{})
	t.Cleanup(func() { a.Close() })
	s := &source{Adapter: a}
	for id, n := range perShard {
		b := adapter.Batch{Shard: id}
		for i := 0; i < n; i++ {
			b.Events = append(b.Events, adapter.Event{Payload: tag(id, i)})
		}
		if err := a.OnBatch(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		s.live = append(s.live, id)
	}
	slices.Sort(s.live)
	return s
}

func tag(id uint16, i int) []byte { return []byte(fmt.Sprintf("%d/%d", id, i)) }

func drainAll(t *testing.T, src consumer.Source, limit int, cursor string) ([]string, string) {
	t.Helper()
	var got []string
	for page := 0; page < 10000; page++ {
		resp, err := consumer.Poll(context.Background(), src, consumer.Request{Limit: limit, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Cursor == "" {
			t.Fatal("empty cursor returned")
		}
		for _, e := range resp.Events {
			got = append(got, string(e.Payload))
		}
		cursor = resp.Cursor
		if !resp.HasMore {
			return got, cursor
		}
	}
	t.Fatal("never ran out of pages")
	return nil, ""
}

func TestPollPagesEveryEventExactlyOnce(t *testing.T) {
	src := newSource(t, map[uint16]int{0: 13, 1: 0, 4: 29})
	got, cursor := drainAll(t, src, 7, "")
	if len(got) != 42 {
		t.Fatalf("read %d events, want 42", len(got))
	}
	seen := map[string]bool{}
	for _, g := range got {
		if seen[g] {
			t.Fatalf("event %s delivered twice", g)
		}
		seen[g] = true
	}
	// A later poll from the final cursor sees only new events.
	src.OnBatch(context.Background(), adapter.Batch{Shard: 1, Events: []adapter.Event{{Payload: []byte("new")}}})
	more, _ := drainAll(t, src, 7, cursor)
	if fmt.Sprint(more) != "[new]" {
		t.Fatalf("after the end: %v", more)
	}
}

// Release note: "PollMerger default shard list is wrong after dynamic
// scale-down".
func TestPollUsesLiveShardSet(t *testing.T) {
	a := redexadapter.New(redexadapter.Options{})
	defer a.Close()
	b, err := bus.New(a, bus.Config{BaseShards: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s1, _ := b.ScaleUp()
	s2, _ := b.ScaleUp()
	if err := b.ScaleDown(context.Background(), s1); err != nil {
		t.Fatal(err)
	}
	// Live set is now {0, 2}: a 0..ActiveShards range would be {0, 1}
	// and miss shard 2.
	b.IngestBatch([]bus.Event{{Payload: []byte("x")}, {Payload: []byte("y")}})
	b.Flush(context.Background())
	resp, err := b.Poll(context.Background(), consumer.Request{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Events) != 2 {
		t.Fatalf("poll returned %d events, want 2 (live shards %v)", len(resp.Events), b.LiveShards())
	}
	s3, _ := b.ScaleUp()
	a.OnBatch(context.Background(), adapter.Batch{Shard: s3, Events: []adapter.Event{{Payload: []byte("z")}}})
	resp, err = b.Poll(context.Background(), consumer.Request{Limit: 10, Cursor: resp.Cursor})
	if err != nil || len(resp.Events) != 1 || resp.Events[0].Shard != s3 {
		t.Fatalf("shard added after the first poll not read: %+v %v", resp.Events, err)
	}
	_ = s2
}

// Release note: "per_shard_limit silently capped at 10 000".
func TestTruncatedAtPerShardCap(t *testing.T) {
	src := newSource(t, map[uint16]int{0: 10_050})
	resp, err := consumer.Poll(context.Background(), src, consumer.Request{Limit: 20_000})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.TruncatedAtPerShardCap || len(resp.Events) != 10_000 || !resp.HasMore {
		t.Fatalf("truncated=%v events=%d hasMore=%v; want true, 10000, true", resp.TruncatedAtPerShardCap, len(resp.Events), resp.HasMore)
	}
	resp, _ = consumer.Poll(context.Background(), src, consumer.Request{Limit: 100})
	if resp.TruncatedAtPerShardCap {
		t.Fatal("limit below the cap reported truncation")
	}
}

// Release note: "has_more=true from a stalled adapter is silently suppressed".
func TestStalledShardsSurfaced(t *testing.T) {
	src := newSource(t, map[uint16]int{0: 2, 3: 5})
	src.stalled = map[uint16]bool{3: true}
	resp, err := consumer.Poll(context.Background(), src, consumer.Request{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(resp.StalledShards) != "[3]" || !resp.HasMore || len(resp.Events) != 2 {
		t.Fatalf("stalled=%v hasMore=%v events=%d", resp.StalledShards, resp.HasMore, len(resp.Events))
	}
}

// A filter does not make the poll fetch more: a page may hold fewer than
// Limit events, HasMore says to continue, and filtered-out events are not
// re-read.
func TestFilteredEventsAdvanceCursor(t *testing.T) {
	src := newSource(t, map[uint16]int{0: 10})
	odd := func(e adapter.StoredEvent) bool { return e.Pos.Lo%2 == 1 }
	resp, err := consumer.Poll(context.Background(), src, consumer.Request{Limit: 3, Filter: odd})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Events) != 1 || resp.Events[0].Pos.Lo != 1 || !resp.HasMore {
		t.Fatalf("first page %v hasMore %v; want [1] and more", resp.Events, resp.HasMore)
	}
	c, _ := consumer.Decode(resp.Cursor)
	if c.Position(0).Lo != 3 {
		t.Fatalf("cursor at %v, want 3 (after the examined 0, 1, 2)", c.Position(0))
	}
	var got []uint64
	for cursor := resp.Cursor; ; {
		resp, err = consumer.Poll(context.Background(), src, consumer.Request{Limit: 3, Filter: odd, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.Events {
			got = append(got, e.Pos.Lo)
		}
		cursor = resp.Cursor
		if !resp.HasMore {
			break
		}
	}
	if fmt.Sprint(got) != "[3 5 7 9]" {
		t.Fatalf("remaining odd events %v", got)
	}
}

func TestByTimestampKeepsShardOrder(t *testing.T) {
	src := newSource(t, map[uint16]int{})
	ctx := context.Background()
	// Interleave appends so timestamps alternate between shards.
	for i := 0; i < 5; i++ {
		for _, id := range []uint16{2, 1} {
			src.OnBatch(ctx, adapter.Batch{Shard: id, Events: []adapter.Event{{Payload: tag(id, i)}}})
		}
	}
	src.live = []uint16{1, 2}
	resp, err := consumer.Poll(ctx, src, consumer.Request{Limit: 100, Order: consumer.ByTimestamp})
	if err != nil {
		t.Fatal(err)
	}
	last := map[uint16]uint64{}
	var prevTS uint64
	for i, e := range resp.Events {
		if i > 0 && e.Timestamp < prevTS {
			t.Fatalf("event %d timestamp %d before %d", i, e.Timestamp, prevTS)
		}
		prevTS = e.Timestamp
		if l, ok := last[e.Shard]; ok && e.Pos.Lo <= l {
			t.Fatalf("shard %d out of order", e.Shard)
		}
		last[e.Shard] = e.Pos.Lo
	}
	if len(resp.Events) != 10 {
		t.Fatalf("%d events", len(resp.Events))
	}
}

func TestPollRestrictedShards(t *testing.T) {
	src := newSource(t, map[uint16]int{0: 3, 1: 4})
	resp, _ := consumer.Poll(context.Background(), src, consumer.Request{Shards: []uint16{1, 9}})
	if len(resp.Events) != 4 {
		t.Fatalf("%d events, want shard 1's 4", len(resp.Events))
	}
	for _, e := range resp.Events {
		if e.Shard != 1 || binary.Size(e.Payload) == 0 {
			t.Fatalf("event from shard %d", e.Shard)
		}
	}
}
