package client

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/purplerain/mesh-operator/node"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/topology"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cluster is two real nodes behind their data APIs.
type cluster struct {
	nodes map[string]*node.Node
	addrs map[string]string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{nodes: map[string]*node.Node{}, addrs: map[string]string{}}
	for _, name := range []string{"a", "b"} {
		c.nodes[name], c.addrs[name] = startNode(t, name)
	}
	return c
}

// startNode starts a real node behind its data API and returns it with
// the API's address; the test's cleanup closes both.
func startNode(t *testing.T, name string) (*node.Node, string) {
	t.Helper()
	n, err := node.New(node.Options{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(dataapi.New(n, nil))
	t.Cleanup(func() {
		srv.Close()
		if err := n.Close(); err != nil {
			t.Errorf("close %s: %v", name, err)
		}
	})
	return n, strings.TrimPrefix(srv.URL, "http://")
}

// applyTopology applies top to every node.
func applyTopology(t *testing.T, nodes map[string]*node.Node, top *topology.Topology) {
	t.Helper()
	for name, n := range nodes {
		if err := n.ApplyTopology(top); err != nil {
			t.Fatalf("push to %s: %v", name, err)
		}
	}
}

// ingestAfterMoveToB moves shard 0 to b at epoch 2 (the client still
// holds epoch 1 and is refused by a, refreshes and retries at b), ingests
// five shard-0 events through cl, and checks that each node's log holds
// what it acknowledged as owner: a the "before-" events from before the
// move, b the "after-" ones.
func ingestAfterMoveToB(t *testing.T, ctx context.Context, cl *Client, nodes map[string]*node.Node, push func(t *testing.T, epoch uint64, owner0 string)) {
	t.Helper()
	push(t, 2, "b")
	var events []Event
	for _, k := range keysFor(0, 5) {
		events = append(events, Event{Key: k, Payload: append([]byte("after-"), k...)})
	}
	if _, err := cl.Ingest(ctx, events...); err != nil {
		t.Fatalf("ingest after the move: %v", err)
	}
	if cl.Topology().Epoch != 2 {
		t.Fatalf("client routes by epoch %d, want 2 after the refusal", cl.Topology().Epoch)
	}
	for name, prefix := range map[string]string{"a": "before-", "b": "after-"} {
		l, err := nodes[name].Log(0)
		if err != nil {
			t.Fatal(err)
		}
		entries, err := l.Read(0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 5 {
			t.Fatalf("%s holds %d events of shard 0, want 5", name, len(entries))
		}
		for _, e := range entries {
			if !strings.HasPrefix(string(e.Payload), prefix) {
				t.Fatalf("%s holds %q, want only %s events", name, e.Payload, prefix)
			}
		}
	}
}

// push applies a topology in which shard 0 is owned by owner0 and shard 1
// by the other node.
func (c *cluster) push(t *testing.T, epoch uint64, owner0 string) {
	t.Helper()
	other := map[string]string{"a": "b", "b": "a"}[owner0]
	top := &topology.Topology{
		Cluster: "c", Epoch: epoch, LeaseMillis: 60_000, BaseShards: 2,
		Members: []topology.Member{{Name: "a", Role: topology.Active, Data: c.addrs["a"]}, {Name: "b", Role: topology.Active, Data: c.addrs["b"]}},
		Shards:  []topology.Shard{{ID: 0, Owner: owner0}, {ID: 1, Owner: other}},
	}
	applyTopology(t, c.nodes, top)
}

func keysFor(shard uint16, n int) [][]byte {
	var out [][]byte
	for i := 0; len(out) < n; i++ {
		k := []byte(fmt.Sprintf("k%d", i))
		if topology.KeyShard(k, 2) == shard {
			out = append(out, k)
		}
	}
	return out
}

// pollEveryEventOnce ingests 40 keyless events through cl and reads them
// back with one poller in pages of 7, each exactly once; it returns the
// poller.
func pollEveryEventOnce(t *testing.T, ctx context.Context, cl *Client) *Poller {
	t.Helper()
	var events []Event
	for i := range 40 {
		events = append(events, Event{Payload: []byte(fmt.Sprintf("e%02d", i))})
	}
	if _, err := cl.Ingest(ctx, events...); err != nil {
		t.Fatal(err)
	}
	p, err := cl.NewPoller("")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 20 {
		page, err := p.Poll(ctx, 7)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Events {
			if seen[string(e.Payload)] {
				t.Fatalf("%s read twice", e.Payload)
			}
			seen[string(e.Payload)] = true
		}
		if !page.HasMore && len(seen) == 40 {
			break
		}
	}
	if len(seen) != 40 {
		t.Fatalf("read %d events, want 40", len(seen))
	}
	return p
}

func TestKeyedEventsGoToTheirOwnerAndFollowAMove(t *testing.T) {
	c := newCluster(t)
	c.push(t, 1, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := New(ctx, Options{Addresses: []string{c.addrs["b"]}, RetryBase: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var events []Event
	for _, k := range keysFor(0, 5) {
		events = append(events, Event{Key: k, Payload: append([]byte("before-"), k...)})
	}
	acks, err := cl.Ingest(ctx, events...)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acks {
		if a.Shard != 0 {
			t.Fatalf("a key of shard 0 was acknowledged on shard %d", a.Shard)
		}
	}

	// The shard moves to b; the client still holds epoch 1 and is
	// refused by a (421 not owner), refreshes and retries at b.
	ingestAfterMoveToB(t, ctx, cl, c.nodes, c.push)
}

func TestPollerReadsEveryOwnerOnceWithOneCursor(t *testing.T) {
	c := newCluster(t)
	c.push(t, 1, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := New(ctx, Options{Addresses: []string{c.addrs["a"]}})
	if err != nil {
		t.Fatal(err)
	}
	p := pollEveryEventOnce(t, ctx, cl)
	// A poller resumed from the saved cursor starts after everything read.
	cur, err := p.Cursor()
	if err != nil {
		t.Fatal(err)
	}
	resumed, err := cl.NewPoller(cur)
	if err != nil {
		t.Fatal(err)
	}
	page, err := resumed.Poll(ctx, 100)
	if err != nil || len(page.Events) != 0 {
		t.Fatalf("resumed poller read %d events (%v), want 0", len(page.Events), err)
	}
}

func TestNoNodeAnsweringIsAnError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := New(ctx, Options{Addresses: []string{"127.0.0.1:1"}}); err == nil {
		t.Fatal("a client with no reachable node must fail to start")
	}
}

func TestRefreshKeepsTheNewestEpochAnyNodeKnows(t *testing.T) {
	c := newCluster(t)
	c.push(t, 1, "a")
	// b hears of epoch 2; a, cut off from the operator, still holds 1.
	top := &topology.Topology{
		Cluster: "c", Epoch: 2, LeaseMillis: 60_000, BaseShards: 2,
		Members: []topology.Member{{Name: "a", Role: topology.Active, Data: c.addrs["a"]}, {Name: "b", Role: topology.Active, Data: c.addrs["b"]}},
		Shards:  []topology.Shard{{ID: 0, Owner: "b"}, {ID: 1, Owner: "b"}},
	}
	if err := c.nodes["b"].ApplyTopology(top); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := New(ctx, Options{Addresses: []string{c.addrs["a"], c.addrs["b"]}})
	if err != nil {
		t.Fatal(err)
	}
	if got := cl.Topology().Epoch; got != 2 {
		t.Fatalf("client learned epoch %d, want the newest, 2", got)
	}
}
