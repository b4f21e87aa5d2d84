package orchestrate

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/purplerain/mesh-operator/client"
	"github.com/purplerain/mesh-operator/client/clienttest"
	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node/adminclient"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/runtime"
	"github.com/purplerain/mesh-operator/node/topology"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cluster is a set of real in-process nodes (node/runtime: the node, its
// replication server and its admin, data and wire listeners) on loopback
// addresses 127.0.4.<base+i> (127.0.3.x belongs to test/install's local
// cluster), and the record an operator would keep.
type cluster struct {
	t      *testing.T
	cfg    *nodeconfig.Config
	driver *Driver

	mu       sync.Mutex
	record   *topology.Topology
	records  []*topology.Topology
	nodes    map[string]*inproc
	members  []topology.Member
	attempts *clienttest.SendCounter
	// onRecord, if set, runs on every recorded topology before it is
	// pushed (tests use it to fail a node at a chosen step).
	onRecord func(*topology.Topology)
	// kinds builds the nodes' daemons (nil: the built-in kinds).
	kinds *compute.Kinds
}

type inproc struct {
	cancel context.CancelFunc
	done   chan error
}

// newCluster starts actives then standbys; ip is the third octet base:
// member i listens on 127.0.4.(ip+i).
func newCluster(t *testing.T, ip, actives, standbys int, ackPolicy string, leaseMillis int64) *cluster {
	t.Helper()
	return newClusterAt(t, "127.0.4", ip, actives, standbys, ackPolicy, leaseMillis, nil)
}

// newClusterAt is newCluster on prefix.(ip+i), with configure (may be nil)
// adjusting the shared configuration before it is validated.
func newClusterAt(t *testing.T, prefix string, ip, actives, standbys int, ackPolicy string, leaseMillis int64, configure func(*nodeconfig.Config)) *cluster {
	t.Helper()
	return newClusterKinds(t, prefix, ip, actives, standbys, ackPolicy, leaseMillis, configure, nil)
}

// newClusterKinds is newClusterAt whose nodes build their daemons from
// kinds (nil: the built-in kinds).
func newClusterKinds(t *testing.T, prefix string, ip, actives, standbys int, ackPolicy string, leaseMillis int64, configure func(*nodeconfig.Config), kinds *compute.Kinds) *cluster {
	t.Helper()
	dir := t.TempDir()
	op, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := op.MarshalPublicKeyPEM()
	priv, _ := ck.MarshalPrivateKeyPEM()
	for name, data := range map[string][]byte{"operator.pub": pub, "cluster.key": priv} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &nodeconfig.Config{
		Cluster: "orch", Shards: 4, AckPolicy: ackPolicy,
		Lease:       nodeconfig.Duration{Duration: time.Duration(leaseMillis) * time.Millisecond},
		Storage:     nodeconfig.Storage{Mode: "Memory", Fsync: "Never"},
		Credentials: nodeconfig.Credentials{OperatorPublicKey: filepath.Join(dir, "operator.pub"), ClusterKey: filepath.Join(dir, "cluster.key")},
	}
	// These specs drive the admin side; the data API's token check is
	// covered in node/dataapi, node/wireapi and test/nodes, so the harness
	// opts out explicitly.
	cfg.DataAuth = &nodeconfig.DataAuth{Mode: nodeconfig.DataAuthNone}
	if configure != nil {
		configure(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, cfg: cfg, nodes: map[string]*inproc{}, kinds: kinds}
	c.driver = &Driver{
		Dial:        adminclient.NewHTTPDialer(op, nil),
		Record:      c.recordTopology,
		StepTimeout: 10 * time.Second,
		Logger:      slog.New(slog.DiscardHandler),
	}
	for i := range actives + standbys {
		role := topology.Active
		name := fmt.Sprintf("a%d", i)
		if i >= actives {
			role, name = topology.Standby, fmt.Sprintf("s%d", i-actives)
		}
		host := fmt.Sprintf("%s.%d", prefix, ip+i)
		hp := func(port int) string { return net.JoinHostPort(host, fmt.Sprint(port)) }
		c.members = append(c.members, topology.Member{Name: name, Role: role,
			Admin: hp(nodeconfig.AdminPort), Data: hp(nodeconfig.DataPort), Wire: hp(nodeconfig.WirePort)})
	}
	for _, m := range c.members {
		c.start(m.Name)
	}
	t.Cleanup(c.stopAll)
	return c
}

func (c *cluster) member(name string) topology.Member {
	for _, m := range c.members {
		if m.Name == name {
			return m
		}
	}
	c.t.Fatalf("no member %s", name)
	return topology.Member{}
}

// start runs the named node and waits until its listeners are up.
func (c *cluster) start(name string) {
	c.t.Helper()
	m := c.member(name)
	ctx, cancel := context.WithCancel(context.Background())
	p := &inproc{cancel: cancel, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		p.done <- runtime.Run(ctx, runtime.Options{
			Config: c.cfg, Name: name, AdminAddr: m.Admin, DataAddr: m.Data, WireAddr: m.Wire,
			DrainTimeout: time.Second, Logger: slog.New(slog.DiscardHandler),
			Ready:       func(_, _, _ net.Addr) { close(ready) },
			DaemonKinds: c.kinds,
		})
	}()
	select {
	case <-ready:
	case err := <-p.done:
		c.t.Fatalf("node %s did not start: %v", name, err)
	}
	c.mu.Lock()
	c.nodes[name] = p
	c.mu.Unlock()
}

// stop stops the named node (a graceful stop: the in-process stand-in for
// a failed node; the process tests use SIGKILL).
func (c *cluster) stop(name string) {
	c.mu.Lock()
	p := c.nodes[name]
	delete(c.nodes, name)
	c.mu.Unlock()
	if p == nil {
		return
	}
	p.cancel()
	<-p.done
}

func (c *cluster) stopAll() {
	c.mu.Lock()
	names := make([]string, 0, len(c.nodes))
	for n := range c.nodes {
		names = append(names, n)
	}
	c.mu.Unlock()
	for _, n := range names {
		c.stop(n)
	}
}

func (c *cluster) recordTopology(t *topology.Topology) error {
	c.mu.Lock()
	hook := c.onRecord
	if c.record != nil && t.Epoch < c.record.Epoch {
		c.mu.Unlock()
		return fmt.Errorf("record: epoch %d is older than the recorded %d", t.Epoch, c.record.Epoch)
	}
	c.record = t.Clone()
	c.records = append(c.records, t.Clone())
	c.mu.Unlock()
	if hook != nil {
		hook(t)
	}
	return nil
}

func (c *cluster) recorded() *topology.Topology {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.record.Clone()
}

// bootstrap records and pushes the initial topology.
func (c *cluster) bootstrap(ctx context.Context) *topology.Topology {
	c.t.Helper()
	t, err := topology.Initial("orch", c.members, c.cfg.Shards, c.cfg.Lease.Milliseconds())
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.driver.recordAndPush(ctx, t, names(c.members)...); err != nil {
		c.t.Fatal(err)
	}
	return t
}

func names(ms []topology.Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

// renew pushes the recorded topology every lease/3 (the operator's lease
// keeper) until ctx ends, skipping members skip says to.
func (c *cluster) renew(ctx context.Context, skip func(string) bool) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(c.cfg.Lease.Duration / 3)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			t := c.recorded()
			for _, m := range t.Members {
				if skip != nil && skip(m.Name) {
					continue
				}
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				_ = c.driver.Dial(m.Admin).PutTopology(cctx, t)
				cancel()
			}
		}
	}()
	return &wg
}

// ingester writes unique payloads through the SDK until stopped and
// remembers which were acknowledged.
type ingester struct {
	mu    sync.Mutex
	acked map[string]uint16
	seq   atomic.Int64
	errs  []error
}

func (c *cluster) client(ctx context.Context) *client.Client {
	c.t.Helper()
	var addrs []string
	for _, m := range c.members {
		addrs = append(addrs, m.Data)
	}
	c.attempts = clienttest.NewSendCounter()
	hc := &http.Client{Timeout: 30 * time.Second, Transport: c.attempts}
	cl, err := client.New(ctx, client.Options{Addresses: addrs, HTTPClient: hc, RetryBase: 5 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// ingest runs workers goroutines (every other one keyed) until ctx ends.
func ingest(ctx context.Context, cl *client.Client, workers int) (*ingester, *sync.WaitGroup) {
	return ingestWith(ctx, cl, workers, nil)
}

// ingestWith is ingest with payloads built by payload from each event's
// unique id (nil: the id itself). Payloads must stay unique.
func ingestWith(ctx context.Context, cl *client.Client, workers int, payload func(id string, n int64) []byte) (*ingester, *sync.WaitGroup) {
	in := &ingester{acked: map[string]uint16{}}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				n := in.seq.Add(1)
				id := fmt.Sprintf("w%d-%d", w, n)
				ev := client.Event{Payload: []byte(id)}
				if payload != nil {
					ev.Payload = payload(id, n)
					id = string(ev.Payload)
				}
				if w%2 == 0 {
					ev.Key = []byte(fmt.Sprintf("key-%d", in.seq.Load()%17))
				}
				acks, err := cl.Ingest(ctx, ev)
				in.mu.Lock()
				if err == nil {
					in.acked[id] = acks[0].Shard
				} else if ctx.Err() == nil {
					in.errs = append(in.errs, err)
				}
				in.mu.Unlock()
			}
		}()
	}
	return in, &wg
}

// verify polls everything and checks that every acknowledged event is
// present exactly once, on the shard it was acknowledged for, and that
// seqs increase per shard. It returns how many events were stored.
func verify(t *testing.T, ctx context.Context, cl *client.Client, in *ingester, sent *clienttest.SendCounter) int {
	t.Helper()
	if err := cl.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	p, err := cl.NewPoller("")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	last := map[uint16]uint64{}
	started := map[uint16]bool{}
	total := 0
	for {
		page, err := p.Poll(ctx, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Events {
			if started[e.Shard] && e.Seq <= last[e.Shard] {
				t.Fatalf("shard %d: seq %d after %d", e.Shard, e.Seq, last[e.Shard])
			}
			started[e.Shard], last[e.Shard] = true, e.Seq
			seen[string(e.Payload)]++
			total++
		}
		if !page.HasMore && len(page.Events) == 0 {
			break
		}
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.errs) > 0 {
		t.Errorf("%d ingest errors, first: %v", len(in.errs), in.errs[0])
	}
	missing, dup, resent := 0, 0, 0
	for id := range in.acked {
		n, tries := seen[id], sent.Sends(id)
		if tries > 1 && n > 1 {
			resent++
		}
		switch {
		case n == 0:
			missing++
			if missing <= 5 {
				t.Errorf("acknowledged event %s missing", id)
			}
		case n > 1 && n > tries:
			dup++
			if dup <= 5 {
				t.Errorf("acknowledged event %s stored %d times but sent %d times", id, n, tries)
			}
		}
	}
	if missing+dup > 0 {
		t.Fatalf("%d of %d acknowledged events missing, %d duplicated", missing, len(in.acked), dup)
	}
	if resent > 0 {
		t.Logf("%d acknowledged events were resent by the SDK after an unacknowledged append and are stored more than once (at-least-once retries)", resent)
	}
	if len(in.acked) == 0 {
		t.Fatal("nothing was acknowledged")
	}
	return total
}

// owners reads every node's status and returns the shards each claims to
// own at the given epoch.
func (c *cluster) statusEpochs(ctx context.Context, t *topology.Topology) map[string]uint64 {
	out := map[string]uint64{}
	for _, m := range t.Members {
		st, err := c.driver.Dial(m.Admin).Status(ctx)
		if err == nil {
			out[m.Name] = st.Epoch
		}
	}
	return out
}

func ownerOf(t *topology.Topology, id uint16) topology.Shard {
	s, _ := t.Shard(id)
	return s
}

type atomicName struct{ v atomic.Value }

func (a *atomicName) set(s string) { a.v.Store(s) }
func (a *atomicName) get() string {
	s, _ := a.v.Load().(string)
	return s
}

// topology_keyFor returns an event whose key maps to shard id.
func topology_keyFor(t *topology.Topology, id uint16, i int) client.Event {
	for k := 0; ; k++ {
		key := []byte(fmt.Sprintf("k%d-%d", i, k))
		if topology.KeyShard(key, t.BaseShards) == id {
			return client.Event{Key: key, Payload: []byte(fmt.Sprintf("p%d-%d", id, i))}
		}
	}
}
