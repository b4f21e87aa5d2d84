package redex

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/purplerain/mesh-operator/engine/adapter"
	store "github.com/purplerain/mesh-operator/engine/redex"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func batch(shard uint16, seq uint64, payloads ...string) adapter.Batch {
	b := adapter.Batch{Shard: shard, Seq: seq, Nonce: "t"}
	for _, p := range payloads {
		b.Events = append(b.Events, adapter.Event{Payload: []byte(p)})
	}
	return b
}

func TestBatchesAppendInOrderPerShard(t *testing.T) {
	a := New(Options{})
	defer a.Close()
	ctx := context.Background()
	if err := a.OnBatch(ctx, batch(1, 0, "a", "b")); err != nil {
		t.Fatal(err)
	}
	if err := a.OnBatch(ctx, batch(2, 0, "x")); err != nil {
		t.Fatal(err)
	}
	if err := a.OnBatch(ctx, batch(1, 1, "c")); err != nil {
		t.Fatal(err)
	}
	res, err := a.PollShard(ctx, 1, adapter.Position{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range res.Events {
		got = append(got, fmt.Sprintf("%s@%d", e.Payload, e.Pos.Lo))
	}
	if fmt.Sprint(got) != "[a@0 b@1 c@2]" || res.HasMore || res.Next.Lo != 3 {
		t.Fatalf("poll = %v hasMore=%v next=%v", got, res.HasMore, res.Next)
	}
	if s := a.Shards(); fmt.Sprint(s) != "[1 2]" {
		t.Fatalf("Shards = %v", s)
	}
}

func TestPayloadCopiedSoCallerMayReuseBuffer(t *testing.T) {
	a := New(Options{})
	defer a.Close()
	buf := []byte("orig")
	a.OnBatch(context.Background(), adapter.Batch{Shard: 0, Events: []adapter.Event{{Payload: buf}}})
	copy(buf, "XXXX")
	res, _ := a.PollShard(context.Background(), 0, adapter.Position{}, 1)
	if string(res.Events[0].Payload) != "orig" {
		t.Fatalf("stored payload changed with the caller's buffer: %q", res.Events[0].Payload)
	}
}

// Release note: "Redis & JetStream limit + 1 overflow on adversarial limits"
// (the same saturating rule holds here).
func TestPollLimitPlusOneSaturates(t *testing.T) {
	a := New(Options{})
	defer a.Close()
	a.OnBatch(context.Background(), batch(0, 0, "a", "b", "c"))
	res, err := a.PollShard(context.Background(), 0, adapter.Position{}, math.MaxInt)
	if err != nil || len(res.Events) != 3 || res.HasMore {
		t.Fatalf("poll with MaxInt limit = %d events hasMore=%v err=%v; want 3,false,nil", len(res.Events), res.HasMore, err)
	}
	res, _ = a.PollShard(context.Background(), 0, adapter.Position{}, 2)
	if len(res.Events) != 2 || !res.HasMore || res.Next.Lo != 2 {
		t.Fatalf("limit 2: %d events hasMore=%v next=%v", len(res.Events), res.HasMore, res.Next)
	}
	res, _ = a.PollShard(context.Background(), 0, res.Next, 2)
	if len(res.Events) != 1 || res.HasMore || res.Next.Lo != 3 {
		t.Fatalf("resume: %d events hasMore=%v next=%v", len(res.Events), res.HasMore, res.Next)
	}
	res, _ = a.PollShard(context.Background(), 0, adapter.Position{Lo: 10}, 2)
	if len(res.Events) != 0 || res.Next.Lo != 10 {
		t.Fatalf("poll past the end moved the position: next=%v", res.Next)
	}
}

func TestPollBehindRetentionIsAnError(t *testing.T) {
	a := New(Options{Log: store.Options{Retention: store.Retention{MaxEvents: 2}}})
	defer a.Close()
	a.OnBatch(context.Background(), batch(0, 0, "a", "b", "c", "d"))
	l, _ := a.Log(0)
	if _, err := l.Sweep(time.Now()); err != nil {
		t.Fatal(err)
	}
	_, err := a.PollShard(context.Background(), 0, adapter.Position{}, 10)
	if !errors.Is(err, ErrBehindRetention) {
		t.Fatalf("poll behind retention = %v, want ErrBehindRetention", err)
	}
}

func TestDiskModeSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	a := New(Options{Dir: dir, SyncOnFlush: true})
	if err := a.OnBatch(context.Background(), batch(3, 0, "p", "q")); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b := New(Options{Dir: dir})
	defer b.Close()
	res, err := b.PollShard(context.Background(), 3, adapter.Position{}, 10)
	if err != nil || len(res.Events) != 2 || string(res.Events[1].Payload) != "q" {
		t.Fatalf("after reopen: %v, %v", res.Events, err)
	}
}

func TestClosedAdapterIsFatalAndUnhealthy(t *testing.T) {
	a := New(Options{})
	a.Close()
	if a.Healthy(context.Background()) {
		t.Fatal("closed adapter reports healthy")
	}
	if err := a.OnBatch(context.Background(), batch(0, 0, "a")); !errors.Is(err, ErrClosed) {
		t.Fatalf("OnBatch after Close = %v", err)
	}
	if _, err := a.PollShard(context.Background(), 0, adapter.Position{Hi: 1}, 1); !adapter.IsFatal(err) {
		t.Fatalf("two-part position = %v, want fatal", err)
	}
}
