package wireapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/rules"
	"github.com/purplerain/mesh-operator/engine/wire"
	"github.com/purplerain/mesh-operator/node"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/refusal"
	"github.com/purplerain/mesh-operator/node/topology"
)

// Tests listen on 127.0.6.1 (other suites use 127.0.1-5.x).
const testHost = "127.0.6.1"

func ownerOf(shards int, owner string) *topology.Topology {
	t := &topology.Topology{
		Cluster: "wire", Epoch: 1, LeaseMillis: 60_000, BaseShards: shards,
		Members: []topology.Member{
			{Name: "a", Role: topology.Active, Data: "a-data:9441"},
			{Name: "b", Role: topology.Active, Data: "b-data:9441"},
		},
	}
	for i := range shards {
		t.Shards = append(t.Shards, topology.Shard{ID: uint16(i), Owner: owner})
	}
	return t
}

func newNode(t *testing.T, topo *topology.Topology) *node.Node {
	t.Helper()
	n, err := node.New(node.Options{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	if topo != nil {
		if err := n.ApplyTopology(topo); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// serve runs a Server over b on a loopback listener and returns a Conn to
// it.
func serve(t *testing.T, b dataapi.Backend, mod func(*ServerOptions)) (*Server, *Conn) {
	t.Helper()
	o := ServerOptions{Backend: b}
	if mod != nil {
		mod(&o)
	}
	s, err := NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", testHost+":0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	c, err := Dial(context.Background(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Close()
		_ = s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, c
}

func TestIngestAndPollRoundTrip(t *testing.T) {
	n := newNode(t, ownerOf(2, "a"))
	_, c := serve(t, n, nil)
	ctx := context.Background()

	acks, err := c.Ingest(ctx, []dataapi.Event{{Payload: []byte("single")}})
	if err != nil || len(acks) != 1 {
		t.Fatalf("single ingest: %v %v", acks, err)
	}
	var batch []dataapi.Event
	for i := range 300 { // spans several packets with 1 KiB payloads
		batch = append(batch, dataapi.Event{Key: []byte(fmt.Sprintf("k%d", i%7)), Payload: bytes.Repeat([]byte{byte(i)}, 1024)})
	}
	acks, err = c.Ingest(ctx, batch)
	if err != nil || len(acks) != len(batch) {
		t.Fatalf("batch ingest: %d acks, %v", len(acks), err)
	}
	for i, a := range acks {
		if want := topology.KeyShard(batch[i].Key, 2); a.Shard != want {
			t.Fatalf("event %d acked on shard %d, key routes to %d", i, a.Shard, want)
		}
	}

	var got []dataapi.StoredEvent
	cursor := ""
	for pages := 0; ; pages++ {
		resp, err := c.Poll(ctx, dataapi.PollRequest{Cursor: cursor, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, resp.Events...)
		cursor = resp.Cursor
		if !resp.HasMore {
			break
		}
		if pages > 10 {
			t.Fatal("poll never ends")
		}
	}
	if len(got) != 301 {
		t.Fatalf("polled %d events, want 301", len(got))
	}
	// Same page through the backend directly: the wire carries every field.
	direct, err := n.Poll(ctx, dataapi.PollRequest{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	all, err := c.Poll(ctx, dataapi.PollRequest{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(direct.Events) != len(all.Events) || direct.Cursor != all.Cursor || direct.HasMore != all.HasMore {
		t.Fatalf("wire poll differs from backend poll: %d/%d events, cursor %q/%q", len(all.Events), len(direct.Events), all.Cursor, direct.Cursor)
	}
	for i := range direct.Events {
		d, w := direct.Events[i], all.Events[i]
		if d.Shard != w.Shard || d.Seq != w.Seq || d.Time != w.Time || !bytes.Equal(d.Payload, w.Payload) {
			t.Fatalf("event %d: wire %+v, backend %+v", i, w, d)
		}
	}
}

func TestRefusalsAreTyped(t *testing.T) {
	ctx := context.Background()
	t.Run("not_owner names the owner's data address", func(t *testing.T) {
		_, c := serve(t, newNode(t, ownerOf(1, "b")), nil)
		_, err := c.Ingest(ctx, []dataapi.Event{{Key: []byte("k"), Payload: []byte("x")}})
		var re *RefusedError
		var no *refusal.NotOwnerError
		if !errors.As(err, &re) || re.Code != dataapi.CodeNotOwner || re.OwnerData != "b-data:9441" || re.Status() != 421 {
			t.Fatalf("got %v", err)
		}
		if !errors.As(err, &no) || no.Data != "b-data:9441" || no.Owner != "b" || no.Shard != 0 {
			t.Fatalf("does not unwrap to NotOwnerError: %v", err)
		}
	})
	t.Run("no_topology", func(t *testing.T) {
		_, c := serve(t, newNode(t, nil), nil)
		_, err := c.Ingest(ctx, []dataapi.Event{{Payload: []byte("x")}})
		if !errors.Is(err, refusal.ErrNoTopology) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("rule_rejected names the rule", func(t *testing.T) {
		n := newNode(t, ownerOf(1, "a"))
		set, err := rules.Parse([]byte(`[{"name":"speed-limit","require":{"field":"speed","op":"le","value":100}}]`))
		if err != nil {
			t.Fatal(err)
		}
		n.SetRules(set)
		_, c := serve(t, n, nil)
		_, err = c.Ingest(ctx, []dataapi.Event{{Payload: []byte(`{"speed":50}`)}, {Payload: []byte(`{"speed":500}`)}})
		var rr *refusal.RuleRejectedError
		if !errors.As(err, &rr) || rr.Rule != "speed-limit" || rr.RateLimited {
			t.Fatalf("got %v", err)
		}
		page, err := c.Poll(ctx, dataapi.PollRequest{Limit: 10})
		if err != nil || len(page.Events) != 0 {
			t.Fatalf("a refused batch left %d events (%v)", len(page.Events), err)
		}
	})
	t.Run("bad_request for an out-of-range poll limit", func(t *testing.T) {
		_, c := serve(t, newNode(t, ownerOf(1, "a")), nil)
		_, err := c.Poll(ctx, dataapi.PollRequest{Limit: 0})
		var re *RefusedError
		if !errors.As(err, &re) || re.Code != dataapi.CodeBadRequest {
			t.Fatalf("got %v", err)
		}
		// The connection is still usable after a refusal.
		if _, err := c.Ingest(ctx, []dataapi.Event{{Payload: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("behind_retention, lease_expired, moving, backpressure keep their codes", func(t *testing.T) {
		for _, tc := range []struct {
			err  error
			code string
		}{
			{refusal.ErrBehindRetention, dataapi.CodeBehindRetention},
			{refusal.ErrLeaseExpired, dataapi.CodeLeaseExpired},
			{refusal.ErrShardMoving, dataapi.CodeShardMoving},
			{refusal.ErrBackpressure, dataapi.CodeBackpressure},
		} {
			b := &gatedBackend{Backend: newNode(t, ownerOf(1, "a")), fail: tc.err}
			_, c := serve(t, b, nil)
			_, err := c.Poll(ctx, dataapi.PollRequest{Limit: 1})
			var re *RefusedError
			if !errors.As(err, &re) || re.Code != tc.code || !errors.Is(err, tc.err) {
				t.Fatalf("%v: got %v", tc.err, err)
			}
		}
	})
}

// gatedBackend wraps a real node: requests whose first event payload is
// "hold" wait for release, and fail, if set, is returned by every poll.
type gatedBackend struct {
	dataapi.Backend
	release chan struct{}
	fail    error
	active  atomic.Int32
	peak    atomic.Int32
}

func (g *gatedBackend) Ingest(ctx context.Context, events []dataapi.Event) ([]dataapi.Ack, error) {
	a := g.active.Add(1)
	defer g.active.Add(-1)
	for {
		p := g.peak.Load()
		if a <= p || g.peak.CompareAndSwap(p, a) {
			break
		}
	}
	if string(events[0].Payload) == "hold" {
		select {
		case <-g.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Backend.Ingest(ctx, events)
}

func (g *gatedBackend) Poll(ctx context.Context, req dataapi.PollRequest) (dataapi.PollResponse, error) {
	if g.fail != nil {
		return dataapi.PollResponse{}, g.fail
	}
	return g.Backend.Poll(ctx, req)
}

func TestPipelinedAnswersOvertake(t *testing.T) {
	g := &gatedBackend{Backend: newNode(t, ownerOf(4, "a")), release: make(chan struct{})}
	_, c := serve(t, g, nil)
	ctx := context.Background()
	held := make(chan error, 1)
	go func() {
		_, err := c.Ingest(ctx, []dataapi.Event{{Payload: []byte("hold")}})
		held <- err
	}()
	// While the first request is held, later ones on the same connection
	// are answered, each with its own acks.
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := []byte(fmt.Sprintf("key-%d", i))
			acks, err := c.Ingest(ctx, []dataapi.Event{{Key: key, Payload: []byte("x")}, {Key: key, Payload: []byte("y")}})
			if err == nil && (len(acks) != 2 || acks[0].Shard != topology.KeyShard(key, 4) || acks[1].Shard != acks[0].Shard) {
				err = fmt.Errorf("request %d got acks %v", i, acks)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-held:
		t.Fatalf("held request answered before release: %v", err)
	default:
	}
	close(g.release)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
}

func TestInFlightBoundedPerConnection(t *testing.T) {
	g := &gatedBackend{Backend: newNode(t, ownerOf(1, "a")), release: make(chan struct{})}
	_, c := serve(t, g, func(o *ServerOptions) { o.MaxInFlight = 3 })
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Ingest(ctx, []dataapi.Event{{Payload: []byte("hold")}}); err != nil {
				t.Error(err)
			}
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for g.active.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // give a fourth a chance to (wrongly) start
	if a := g.active.Load(); a != 3 {
		t.Fatalf("%d requests in the backend, want MaxInFlight 3", a)
	}
	close(g.release)
	wg.Wait()
	if p := g.peak.Load(); p != 3 {
		t.Fatalf("peak %d requests in flight, want 3", p)
	}
}

func TestBudgetBlocksUntilReleased(t *testing.T) {
	b := newBudget(100)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := b.acquire(context.Background(), 80); err != nil {
		t.Fatal(err)
	}
	if err := b.acquire(ctx, 30); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire past the budget: %v", err)
	}
	got := make(chan error, 1)
	go func() { got <- b.acquire(context.Background(), 30) }()
	b.release(80)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

// rawPacket builds one packet of this subprotocol.
func rawPacket(t testing.TB, seq, stream uint64, flags wire.Flags, frames ...[]byte) []byte {
	t.Helper()
	b, err := wire.BuildPacket(nil, wire.Header{Subprotocol: Subprotocol, StreamID: stream, Sequence: seq, Flags: flags}, frames, MaxPacketPayload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestProtocolViolationClosesConnection(t *testing.T) {
	n := newNode(t, ownerOf(1, "a"))
	for name, data := range map[string][]byte{
		"sequence gap":      rawPacket(t, 2, 1, wire.FlagFin, []byte{byte(kindPoll), 1, 0, 0, 0, 0, 0}),
		"stream id zero":    rawPacket(t, 1, 0, wire.FlagFin, []byte{byte(kindPoll), 1, 0, 0, 0, 0, 0}),
		"unknown kind":      rawPacket(t, 1, 1, wire.FlagFin, []byte{0x7f}),
		"bad event frame":   rawPacket(t, 1, 1, wire.FlagFin, []byte{byte(kindIngest)}, []byte{9, 0, 'k'}),
		"poll trailing":     rawPacket(t, 1, 1, wire.FlagFin, []byte{byte(kindPoll), 1, 0, 0, 0, 0, 0, 0}),
		"replication magic": append(rawPacket(t, 1, 1, wire.FlagFin, []byte{1})[:8:8], make([]byte, 56)...),
	} {
		t.Run(name, func(t *testing.T) {
			s, err := NewServer(ServerOptions{Backend: n})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			cli, srv := net.Pipe()
			done := make(chan error, 1)
			go func() { done <- s.ServeConn(srv) }()
			go func() { _, _ = cli.Write(data) }()
			err = <-done
			if err == nil {
				t.Fatal("ServeConn accepted a malformed stream")
			}
			if _, rerr := io.ReadAll(cli); rerr != nil && !errors.Is(rerr, io.ErrClosedPipe) {
				t.Fatalf("read after violation: %v", rerr)
			}
			cli.Close()
		})
	}
}

func TestDuplicateStreamInFlightIsViolation(t *testing.T) {
	g := &gatedBackend{Backend: newNode(t, ownerOf(1, "a")), release: make(chan struct{})}
	defer close(g.release)
	s, err := NewServer(ServerOptions{Backend: g})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cli, srv := net.Pipe()
	defer cli.Close()
	done := make(chan error, 1)
	go func() { done <- s.ServeConn(srv) }()
	hold := append([]byte{0, 0}, []byte("hold")...)
	go func() {
		_, _ = cli.Write(rawPacket(t, 1, 7, wire.FlagFin, []byte{byte(kindIngest)}, hold))
		_, _ = cli.Write(rawPacket(t, 2, 7, wire.FlagFin, []byte{byte(kindIngest)}, hold))
	}()
	if err := <-done; !errors.Is(err, ErrProtocol) {
		t.Fatalf("got %v, want a protocol violation", err)
	}
}

func TestConnFailsWaitersWhenServerCloses(t *testing.T) {
	g := &gatedBackend{Backend: newNode(t, ownerOf(1, "a")), release: make(chan struct{})}
	defer close(g.release)
	s, c := serve(t, g, nil)
	got := make(chan error, 1)
	go func() {
		_, err := c.Ingest(context.Background(), []dataapi.Event{{Payload: []byte("hold")}})
		got <- err
	}()
	for g.active.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	_ = s.Close()
	if err := <-got; !errors.Is(err, ErrConnection) {
		t.Fatalf("waiter got %v, want ErrConnection", err)
	}
	if _, err := c.Ingest(context.Background(), []dataapi.Event{{Payload: []byte("x")}}); !errors.Is(err, ErrConnection) {
		t.Fatalf("request on a dead connection: %v", err)
	}
}
