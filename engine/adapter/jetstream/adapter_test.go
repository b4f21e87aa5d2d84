package jetstream

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/purplerain/mesh-operator/engine/adapter"
	"github.com/purplerain/mesh-operator/engine/bus"
	"github.com/purplerain/mesh-operator/engine/consumer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startServer runs a real nats-server with JetStream on a free loopback
// port and a temporary store directory, shut down when the test ends.
func startServer(t *testing.T) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return s.ClientURL()
}

func dial(t *testing.T, url string, o Options) *Adapter {
	t.Helper()
	a, err := Dial(url, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func batchOf(shard uint16, seq uint64, payloads ...string) adapter.Batch {
	b := adapter.Batch{Shard: shard, Seq: seq, Nonce: "test"}
	for i, p := range payloads {
		b.Events = append(b.Events, adapter.Event{Payload: []byte(p), Timestamp: uint64(100 + i)})
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

func TestStreamPerShardRoundTrip(t *testing.T) {
	a := dial(t, startServer(t), Options{})
	ctx := context.Background()
	if err := a.OnBatch(ctx, batchOf(0, 0, "a", "b")); err != nil {
		t.Fatal(err)
	}
	if err := a.OnBatch(ctx, batchOf(1, 0, "x")); err != nil {
		t.Fatal(err)
	}
	r0, err := a.PollShard(ctx, 0, adapter.Position{}, 10)
	if err != nil || payloads(r0.Events) != "[a b]" || r0.HasMore || r0.Next.Lo != 3 {
		t.Fatalf("shard 0: %s hasMore=%v next=%v err=%v", payloads(r0.Events), r0.HasMore, r0.Next, err)
	}
	if r0.Events[1].Timestamp != 101 || r0.Events[1].DedupID != "test:0:0:1" {
		t.Fatalf("event metadata %+v", r0.Events[1])
	}
	r1, _ := a.PollShard(ctx, 1, adapter.Position{}, 10)
	if payloads(r1.Events) != "[x]" {
		t.Fatalf("shard 1: %s", payloads(r1.Events))
	}
	shards, err := a.ListShards(ctx)
	if err != nil || fmt.Sprint(shards) != "[0 1]" {
		t.Fatalf("ListShards = %v %v", shards, err)
	}
}

func TestRetriedBatchDeduplicatedByMsgID(t *testing.T) {
	a := dial(t, startServer(t), Options{})
	ctx := context.Background()
	b := batchOf(2, 7, "one", "two", "three")
	for i := 0; i < 3; i++ {
		if err := a.OnBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	r, _ := a.PollShard(ctx, 2, adapter.Position{}, 100)
	if payloads(r.Events) != "[one two three]" {
		t.Fatalf("after 3 sends of one batch: %s", payloads(r.Events))
	}
}

// Release note: "JetStream as u16 truncates shard_id".
func TestShardIDAbove65535RejectedFatal(t *testing.T) {
	url := startServer(t)
	a := dial(t, url, Options{})
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	j, _ := js.New(nc)
	// A stream named for shard 70000 (which as uint16 would be 4464).
	if _, err := j.CreateStream(context.Background(), js.StreamConfig{Name: "MESH_70000", Subjects: []string{"mesh.70000"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ListShards(context.Background()); !adapter.IsFatal(err) {
		t.Fatalf("ListShards with MESH_70000 = %v, want fatal", err)
	}
	if _, err := ShardFromStream(65536); !adapter.IsFatal(err) {
		t.Fatal("65536 accepted")
	}
}

// Release note: "JetStream unwrap_or_default() on remote JSON".
func TestMalformedRemotePayloadIsFatal(t *testing.T) {
	url := startServer(t)
	a := dial(t, url, Options{})
	ctx := context.Background()
	if err := a.OnBatch(ctx, batchOf(3, 0, "good")); err != nil {
		t.Fatal(err)
	}
	nc, _ := nats.Connect(url)
	defer nc.Close()
	j, _ := js.New(nc)
	if _, err := j.Publish(ctx, a.Subject(3), []byte("{not an envelope")); err != nil {
		t.Fatal(err)
	}
	r, err := a.PollShard(ctx, 3, adapter.Position{}, 10)
	if !adapter.IsFatal(err) {
		t.Fatalf("poll over a malformed message = %v, want fatal", err)
	}
	if len(r.Events) != 0 {
		t.Fatalf("fatal poll returned %d events", len(r.Events))
	}
}

// Release note: cold_stream_bail_gate_only_fires_when_first_seq_is_zero.
func TestColdStreamBailGateOnlyFiresWhenFirstSeqIsZero(t *testing.T) {
	url := startServer(t)
	a := dial(t, url, Options{})
	ctx := context.Background()
	if err := a.ActivateShard(ctx, 4); err != nil {
		t.Fatal(err)
	}
	before := a.nc.Stats().OutMsgs
	r, err := a.PollShard(ctx, 4, adapter.Position{}, 100)
	if err != nil || len(r.Events) != 0 || r.HasMore {
		t.Fatalf("cold poll: %d events hasMore=%v err=%v", len(r.Events), r.HasMore, err)
	}
	if reqs := a.nc.Stats().OutMsgs - before; reqs > 1 {
		t.Fatalf("cold poll made %d requests, want only the stream info", reqs)
	}

	// Populated sparse stream: seqs 1, 500 and 1000 survive.
	b := adapter.Batch{Shard: 5, Nonce: "sparse"}
	for i := 1; i <= 1000; i++ {
		b.Events = append(b.Events, adapter.Event{Payload: []byte(fmt.Sprint(i))})
	}
	if err := a.OnBatch(ctx, b); err != nil {
		t.Fatal(err)
	}
	s, _ := a.stream(ctx, 5)
	for seq := uint64(2); seq < 1000; seq++ {
		if seq == 500 {
			continue
		}
		if err := s.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	before = a.nc.Stats().OutMsgs
	r, err = a.PollShard(ctx, 5, adapter.Position{}, 100)
	if err != nil || payloads(r.Events) != "[1 500 1000]" || r.HasMore || r.Next.Lo != 1001 {
		t.Fatalf("sparse poll: %s hasMore=%v next=%v err=%v", payloads(r.Events), r.HasMore, r.Next, err)
	}
	if reqs := a.nc.Stats().OutMsgs - before; reqs > 5 {
		t.Fatalf("sparse poll made %d requests; gaps must not cost round trips", reqs)
	}
	r, _ = a.PollShard(ctx, 5, adapter.Position{Lo: 2}, 1)
	if payloads(r.Events) != "[500]" || !r.HasMore || r.Next.Lo != 501 {
		t.Fatalf("resume in a gap: %s hasMore=%v next=%v", payloads(r.Events), r.HasMore, r.Next)
	}
}

// Release notes: "JetStream from_id cursor seq + 1 overflows" and
// "limit + 1 overflow on adversarial limits".
func TestCursorAndLimitSaturate(t *testing.T) {
	a := dial(t, startServer(t), Options{})
	ctx := context.Background()
	a.OnBatch(ctx, batchOf(6, 0, "a", "b"))
	r, err := a.PollShard(ctx, 6, adapter.Position{}, math.MaxInt)
	if err != nil || len(r.Events) != 2 || r.HasMore {
		t.Fatalf("MaxInt limit: %d events hasMore=%v err=%v", len(r.Events), r.HasMore, err)
	}
	r, err = a.PollShard(ctx, 6, adapter.Position{Lo: math.MaxUint64}, 10)
	if err != nil || len(r.Events) != 0 || r.Next.Lo != math.MaxUint64 {
		t.Fatalf("poll from MaxUint64: next=%v err=%v (must not wrap to 0)", r.Next, err)
	}
}

func TestHealthyBoundedByTimeout(t *testing.T) {
	url := startServer(t)
	a := dial(t, url, Options{RequestTimeout: 200 * time.Millisecond})
	if !a.Healthy(context.Background()) {
		t.Fatal("healthy server reported unhealthy")
	}
	a.nc.Close()
	start := time.Now()
	if a.Healthy(context.Background()) {
		t.Fatal("closed connection reported healthy")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Healthy took %s", d)
	}
}

// The bus on top of JetStream: ingest, flush, poll back through the
// consumer.
func TestBusOverJetStream(t *testing.T) {
	a := dial(t, startServer(t), Options{})
	b, err := bus.New(a, bus.Config{BaseShards: 2, Batch: bus.BatchConfig{Min: 8, Max: 64, MaxDelay: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		if _, err := b.IngestRaw([]byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	var got int
	cursor := ""
	for {
		resp, err := consumer.Poll(context.Background(), jsSource{a}, consumer.Request{Limit: 64, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		got += len(resp.Events)
		cursor = resp.Cursor
		if !resp.HasMore {
			break
		}
	}
	if got != 200 {
		t.Fatalf("read back %d of 200", got)
	}
}

type jsSource struct{ *Adapter }

func (s jsSource) Shards() []uint16 { return s.Adapter.Shards() }
