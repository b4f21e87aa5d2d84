package redis

import (
	"context"
	"fmt"
	"math"
	"net"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/purplerain/mesh-operator/engine/adapter"
	"github.com/purplerain/mesh-operator/engine/adapter/dedup"
	"github.com/purplerain/mesh-operator/engine/adapter/redis/redistest"
	"github.com/purplerain/mesh-operator/engine/bus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func dial(t *testing.T, o Options) (*Adapter, *redistest.Server) {
	t.Helper()
	srv := redistest.ForTest(t)
	a := Dial(srv.Addr, o)
	t.Cleanup(func() { a.Close() })
	return a, srv
}

func batchOf(shard uint16, seq uint64, payloads ...string) adapter.Batch {
	b := adapter.Batch{Shard: shard, Seq: seq, Nonce: "n"}
	for i, p := range payloads {
		b.Events = append(b.Events, adapter.Event{Payload: []byte(p), Timestamp: uint64(10 + i)})
	}
	return b
}

func payloads(evs []adapter.StoredEvent) string {
	var s []string
	for _, e := range evs {
		s = append(s, string(e.Payload))
	}
	return fmt.Sprint(s)
}

func TestPipelinedXAddPerShardWithDedupIDs(t *testing.T) {
	a, _ := dial(t, Options{})
	ctx := context.Background()
	if err := a.OnBatch(ctx, batchOf(0, 4, "a", "b", "c")); err != nil {
		t.Fatal(err)
	}
	a.OnBatch(ctx, batchOf(1, 0, "z"))
	r, err := a.PollShard(ctx, 0, adapter.Position{}, 10)
	if err != nil || payloads(r.Events) != "[a b c]" || r.HasMore {
		t.Fatalf("poll: %s hasMore=%v err=%v", payloads(r.Events), r.HasMore, err)
	}
	for i, e := range r.Events {
		if want := fmt.Sprintf("n:0:4:%d", i); e.DedupID != want || e.Timestamp != uint64(10+i) {
			t.Fatalf("entry %d: dedup %q ts %d", i, e.DedupID, e.Timestamp)
		}
	}
	if n, _ := a.rdb.XLen(ctx, a.Key(1)).Result(); n != 1 {
		t.Fatalf("shard 1 stream has %d entries", n)
	}
	if fmt.Sprint(a.Shards()) != "[0 1]" {
		t.Fatalf("Shards = %v", a.Shards())
	}
}

func TestPollPagesWithResumePosition(t *testing.T) {
	a, _ := dial(t, Options{})
	ctx := context.Background()
	a.OnBatch(ctx, batchOf(2, 0, "1", "2", "3", "4", "5"))
	var got []adapter.StoredEvent
	from := adapter.Position{}
	for page := 0; ; page++ {
		r, err := a.PollShard(ctx, 2, from, 2)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.Events...)
		if r.Next.Less(from) {
			t.Fatal("Next moved backwards")
		}
		from = r.Next
		if !r.HasMore {
			break
		}
	}
	if payloads(got) != "[1 2 3 4 5]" {
		t.Fatalf("paged read %s", payloads(got))
	}
}

// Release note: "Redis & JetStream limit + 1 overflow on adversarial limits".
func TestLimitPlusOneSaturates(t *testing.T) {
	a, _ := dial(t, Options{})
	ctx := context.Background()
	a.OnBatch(ctx, batchOf(3, 0, "a", "b"))
	r, err := a.PollShard(ctx, 3, adapter.Position{}, math.MaxInt)
	if err != nil || len(r.Events) != 2 || r.HasMore {
		t.Fatalf("MaxInt limit: %d events hasMore=%v err=%v", len(r.Events), r.HasMore, err)
	}
	last := adapter.Position{Hi: math.MaxUint64, Lo: math.MaxUint64}
	if last.Next() != last {
		t.Fatal("largest stream id wrapped")
	}
}

func TestMalformedEntryIsFatal(t *testing.T) {
	a, _ := dial(t, Options{})
	ctx := context.Background()
	a.rdb.XAdd(ctx, &goredis.XAddArgs{Stream: a.Key(4), Values: []any{"e", "junk"}})
	if _, err := a.PollShard(ctx, 4, adapter.Position{}, 10); !adapter.IsFatal(err) {
		t.Fatalf("junk envelope: %v, want fatal", err)
	}
	a.rdb.XAdd(ctx, &goredis.XAddArgs{Stream: a.Key(5), Values: []any{"d", "only-an-id"}})
	if _, err := a.PollShard(ctx, 5, adapter.Position{}, 10); !adapter.IsFatal(err) {
		t.Fatalf("missing envelope: %v, want fatal", err)
	}
}

// A retried batch duplicates entries in Redis; the dedup ids let a
// consumer drop them with package dedup.
func TestRetriedBatchDuplicatesDroppedByDedup(t *testing.T) {
	a, _ := dial(t, Options{})
	ctx := context.Background()
	b := batchOf(6, 1, "x", "y")
	a.OnBatch(ctx, b)
	a.OnBatch(ctx, b)
	r, _ := a.PollShard(ctx, 6, adapter.Position{}, 10)
	if len(r.Events) != 4 {
		t.Fatalf("%d entries, want the 4 written", len(r.Events))
	}
	seen := dedup.New(16)
	var kept []adapter.StoredEvent
	for _, e := range r.Events {
		if !seen.Seen(e.DedupID) {
			kept = append(kept, e)
		}
	}
	if payloads(kept) != "[x y]" {
		t.Fatalf("after dedup: %s", payloads(kept))
	}
}

// Release note: "Redis is_healthy PING has no enforced timeout".
func TestHealthyPingBoundedByCommandTimeout(t *testing.T) {
	a, _ := dial(t, Options{})
	if !a.Healthy(context.Background()) {
		t.Fatal("live server unhealthy")
	}
	// A server that accepts connections and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var conns []net.Conn
	var mu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		l.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	}()
	hung := New(goredis.NewClient(&goredis.Options{Addr: l.Addr().String(), MaxRetries: -1,
		ReadTimeout: time.Hour, WriteTimeout: time.Hour, ContextTimeoutEnabled: true}),
		Options{CommandTimeout: 100 * time.Millisecond})
	defer hung.rdb.Close()
	start := time.Now()
	if hung.Healthy(context.Background()) {
		t.Fatal("silent server reported healthy")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Healthy took %s against a silent server", d)
	}
}

func TestBusOverRedis(t *testing.T) {
	a, _ := dial(t, Options{})
	b, err := bus.New(a, bus.Config{BaseShards: 2, Batch: bus.BatchConfig{Min: 8, Max: 64, MaxDelay: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		if _, err := b.IngestRaw([]byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, id := range []uint16{0, 1} {
		r, err := a.PollShard(context.Background(), id, adapter.Position{}, 1000)
		if err != nil {
			t.Fatal(err)
		}
		total += len(r.Events)
	}
	if total != 300 {
		t.Fatalf("stored %d of 300", total)
	}
}
