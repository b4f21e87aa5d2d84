package client

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/node"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/topology"
)

// watchedCluster is two real nodes whose data APIs count topology requests
// and ingests, refuse topology requests on demand and can hold them.
type watchedCluster struct {
	nodes map[string]*node.Node
	addrs map[string]string

	topologyGets map[string]*atomic.Int64 // GET /v1/topology, by node
	ingests      map[string]*atomic.Int64 // POST /v1/ingest, by node
	refused      atomic.Int64             // ingests answered other than 200
	failTopology atomic.Bool              // answer /v1/topology with 500

	mu      sync.Mutex
	hold    chan struct{} // non-nil: topology requests wait for it to close
	entered chan struct{} // gets one value per held topology request
}

func newWatchedCluster(t *testing.T) *watchedCluster {
	t.Helper()
	c := &watchedCluster{nodes: map[string]*node.Node{}, addrs: map[string]string{},
		topologyGets: map[string]*atomic.Int64{}, ingests: map[string]*atomic.Int64{}}
	for _, name := range []string{"a", "b"} {
		n, err := node.New(node.Options{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		api := dataapi.New(n, nil)
		gets, ingests := &atomic.Int64{}, &atomic.Int64{}
		c.topologyGets[name], c.ingests[name] = gets, ingests
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/v1/topology":
				gets.Add(1)
				c.mu.Lock()
				hold, entered := c.hold, c.entered
				c.mu.Unlock()
				if hold != nil {
					entered <- struct{}{}
					<-hold
				}
				if c.failTopology.Load() {
					http.Error(w, "topology endpoint down", http.StatusInternalServerError)
					return
				}
			case "/v1/ingest":
				ingests.Add(1)
				sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
				api.ServeHTTP(sw, r)
				if sw.status != http.StatusOK {
					c.refused.Add(1)
				}
				return
			}
			api.ServeHTTP(w, r)
		}))
		t.Cleanup(func() {
			srv.Close()
			if err := n.Close(); err != nil {
				t.Errorf("close %s: %v", name, err)
			}
		})
		c.nodes[name] = n
		c.addrs[name] = strings.TrimPrefix(srv.URL, "http://")
	}
	return c
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

// apply pushes a topology with both nodes as members and shard i owned by
// owners[i].
func (c *watchedCluster) apply(t *testing.T, epoch uint64, owners ...string) {
	t.Helper()
	top := &topology.Topology{Cluster: "c", Epoch: epoch, LeaseMillis: 60_000, BaseShards: 2,
		Members: []topology.Member{{Name: "a", Role: topology.Active, Data: c.addrs["a"]}, {Name: "b", Role: topology.Active, Data: c.addrs["b"]}}}
	for i, o := range owners {
		top.Shards = append(top.Shards, topology.Shard{ID: uint16(i), Owner: o})
	}
	for name, n := range c.nodes {
		if err := n.ApplyTopology(top); err != nil {
			t.Fatalf("push to %s: %v", name, err)
		}
	}
}

// gets is the number of topology requests each node answered, "a,b".
func (c *watchedCluster) gets() string {
	return fmt.Sprintf("%d,%d", c.topologyGets["a"].Load(), c.topologyGets["b"].Load())
}

func (c *watchedCluster) resetGets() {
	c.topologyGets["a"].Store(0)
	c.topologyGets["b"].Store(0)
}

// age makes the client's topology look learnt d ago.
func age(cl *Client, d time.Duration) {
	cl.mu.Lock()
	cl.refreshed = cl.refreshed.Add(-d)
	cl.mu.Unlock()
}

// A client that only ingests keyless events learns of a shard added on a
// member it never wrote to once its topology is older than
// TopologyMaxAge, and sends that shard its share of the events: no
// refused write is needed to learn the new topology.
func TestIngestOnlyClientReachesAShardAddedOnAMemberItNeverWroteTo(t *testing.T) {
	c := newWatchedCluster(t)
	// Epoch 1: a owns both base shards, b owns nothing.
	c.apply(t, 1, "a", "a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const maxAge = 50 * time.Millisecond
	cl, err := New(ctx, Options{Addresses: []string{c.addrs["a"]}, RetryBase: time.Millisecond, TopologyMaxAge: maxAge})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range 10 {
		if _, err := cl.Ingest(ctx, Event{Payload: fmt.Appendf(nil, "before-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.ingests["b"].Load(); n != 0 {
		t.Fatalf("b, which owns nothing, got %d ingests", n)
	}

	// Epoch 2: autoscaling adds shard 2 on b.
	c.apply(t, 2, "a", "a", "b")
	for !cl.topologyOlderThan(maxAge) {
		time.Sleep(maxAge / 5)
	}
	// Three shards take keyless events now, one of them on b: of three
	// writes one goes there, the first refreshing the topology.
	const bound = 3
	reached := 0
	for i := range bound {
		acks, err := cl.Ingest(ctx, Event{Payload: fmt.Appendf(nil, "after-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if acks[0].Shard == 2 {
			reached++
		}
	}
	if reached != 1 {
		t.Fatalf("%d of %d keyless writes reached added shard 2, want 1 (client at epoch %d)", reached, bound, cl.Topology().Epoch)
	}
	if n := c.refused.Load(); n != 0 {
		t.Fatalf("%d writes were refused; the topology should have been refreshed before routing", n)
	}
}

// Writes that find the topology stale while a refresh is in flight wait
// for that one refresh: one topology request per member for them all,
// and none more within TopologyMaxAge.
func TestConcurrentIngestsShareOneTopologyRefresh(t *testing.T) {
	c := newWatchedCluster(t)
	c.apply(t, 1, "a", "b")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := New(ctx, Options{Addresses: []string{c.addrs["a"]}, RetryBase: time.Millisecond, TopologyMaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c.apply(t, 2, "a", "b", "b")
	c.resetGets()
	age(cl, 2*time.Hour)

	hold, entered := make(chan struct{}), make(chan struct{}, 4)
	c.mu.Lock()
	c.hold, c.entered = hold, entered
	c.mu.Unlock()
	const writers = 16
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := cl.Ingest(ctx, Event{Payload: fmt.Appendf(nil, "w-%d", i)}, Event{Key: fmt.Appendf(nil, "k%d", i), Payload: []byte("keyed")})
			errs <- err
		}()
	}
	// Hold the refresh until every other writer waits for it.
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("no topology request")
	}
	for {
		cl.rmu.Lock()
		waiters := 0
		if cl.rcall != nil {
			waiters = cl.rcall.waiters
		}
		cl.rmu.Unlock()
		if waiters == writers-1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d writers wait for the refresh, want %d", waiters, writers-1)
		}
		time.Sleep(time.Millisecond)
	}
	c.mu.Lock()
	c.hold = nil
	c.mu.Unlock()
	close(hold)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := c.gets(); got != "1,1" {
		t.Fatalf("topology requests a,b = %s, want 1,1 (one refresh for %d writers)", got, writers)
	}
	if e := cl.Topology().Epoch; e != 2 {
		t.Fatalf("client at epoch %d after the refresh, want 2", e)
	}
	// Fresh now: more writes ask no more.
	for i := range 20 {
		if _, err := cl.Ingest(ctx, Event{Payload: fmt.Appendf(nil, "more-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.gets(); got != "1,1" {
		t.Fatalf("topology requests a,b = %s after more writes, want still 1,1", got)
	}
}

// A topology endpoint that fails does not fail writes: they proceed with
// the old topology, and heavy load does not retry the refresh before
// TopologyMaxAge has passed again.
func TestFailingTopologyRefreshDoesNotFailWrites(t *testing.T) {
	c := newWatchedCluster(t)
	c.apply(t, 1, "a", "b")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := New(ctx, Options{Addresses: []string{c.addrs["a"]}, RetryBase: time.Millisecond, TopologyMaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c.failTopology.Store(true)
	c.resetGets()
	age(cl, 2*time.Hour)

	const writers, each = 8, 25
	errs := make(chan error, writers*each)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				_, err := cl.Ingest(ctx, Event{Payload: fmt.Appendf(nil, "w%d-%d", w, i)})
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a write failed with the topology endpoint down: %v", err)
		}
	}
	if got := c.gets(); got != "1,1" {
		t.Fatalf("topology requests a,b = %s, want 1,1 (one failed refresh, not retried within TopologyMaxAge)", got)
	}
	if e := cl.Topology().Epoch; e != 1 || !cl.topologyOlderThan(time.Hour) {
		t.Fatalf("client at epoch %d, stale %v: want the old topology kept", e, cl.topologyOlderThan(time.Hour))
	}
	if n := c.ingests["a"].Load() + c.ingests["b"].Load(); n != writers*each || c.refused.Load() != 0 {
		t.Fatalf("%d ingests, %d refused; want %d, none refused", n, c.refused.Load(), writers*each)
	}
}
