package nodes

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/client"
	"github.com/purplerain/mesh-operator/client/clienttest"
	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/compute/daemons"
	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node"
	"github.com/purplerain/mesh-operator/node/adminclient"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/orchestrate"
	"github.com/purplerain/mesh-operator/node/topology"
)

const (
	baseShards = 6
	// leaseMillis is short so the lease tests finish quickly, and long
	// enough that a renewal every lease/3 never misses on a busy machine.
	leaseMillis = 1500
)

// cluster is three actives (a0..a2) and a standby (s0) running as
// mesh-node processes on 127.0.2.<base>..<base+3>, and the test's
// operator: its record, a lease keeper and an orchestrate.Driver.
type cluster struct {
	t       testing.TB
	dir     string
	cfgPath string
	members []topology.Member
	driver  *orchestrate.Driver
	// creds are the data-API credentials made as the operator makes them
	// (a data key and the operator key's grant to it): the nodes require
	// data tokens, and every client here presents them.
	creds *identity.DataCredentials

	// renewMu is held for a whole renewal round, so setCut returns only
	// once no push to the member it cuts is in flight.
	renewMu sync.Mutex
	mu      sync.Mutex
	record  *topology.Topology
	// history is every recorded topology with the time it was recorded.
	history []recorded
	procs   map[string]*proc
	// cut are members the lease keeper does not push to (cut off from
	// the operator, or killed and not yet replaced).
	cut map[string]bool
	// lastSent and lastAcked are when the last push to each member was
	// sent and when it was answered: the member's lease started in
	// between.
	lastSent, lastAcked map[string]time.Time

	attempts *clienttest.SendCounter
	// daemons are the declared daemons (checked by verify).
	daemons []nodeconfig.Daemon
}

type recorded struct {
	at time.Time
	t  *topology.Topology
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func newCluster(t testing.TB, base int, ackPolicy string) *cluster {
	t.Helper()
	return newClusterWith(t, base, ackPolicy, procDaemons)
}

// procDaemons are the daemons the process tests declare: a counter on
// every shard and a sum on two (payloads carry "key", "amount", "ts").
var procDaemons = []nodeconfig.Daemon{
	{Name: "visits", Kind: "counter"},
	{Name: "spend", Kind: "sum", Shards: []int{0, 1}, Config: map[string]string{"field": "amount", "window": "1s", "timeField": "ts"}},
}

// newClusterWith is newCluster with the given daemon declarations.
func newClusterWith(t testing.TB, base int, ackPolicy string, daemons []nodeconfig.Daemon) *cluster {
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
	creds, err := identity.NewDataCredentials(op, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, nodeconfig.FileName)
	decls, err := json.Marshal(daemons)
	if err != nil {
		t.Fatal(err)
	}
	doc := fmt.Sprintf(`{"cluster":"proc","shards":%d,"ackPolicy":%q,"lease":"%dms","storage":{"mode":"Memory","fsync":"Never"},
		"credentials":{"operatorPublicKey":%q,"clusterKey":%q},"daemons":%s}`, baseShards, ackPolicy, leaseMillis,
		filepath.Join(dir, "operator.pub"), filepath.Join(dir, "cluster.key"), decls)
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, dir: dir, cfgPath: cfg, creds: creds, daemons: daemons, procs: map[string]*proc{}, cut: map[string]bool{},
		lastSent: map[string]time.Time{}, lastAcked: map[string]time.Time{}, attempts: clienttest.NewSendCounter()}
	for i, name := range []string{"a0", "a1", "a2", "s0"} {
		role := topology.Active
		if name == "s0" {
			role = topology.Standby
		}
		host := fmt.Sprintf("127.0.2.%d", base+i)
		hp := func(port int) string { return net.JoinHostPort(host, fmt.Sprint(port)) }
		c.members = append(c.members, topology.Member{Name: name, Role: role,
			Admin: hp(nodeconfig.AdminPort), Data: hp(nodeconfig.DataPort), Wire: hp(nodeconfig.WirePort)})
	}
	c.driver = &orchestrate.Driver{
		Dial:        adminclient.NewHTTPDialer(op, nil),
		Record:      c.recordTopology,
		StepTimeout: 15 * time.Second,
		Logger:      slog.New(slog.DiscardHandler),
	}
	t.Cleanup(func() {
		c.killAll()
		if t.Failed() {
			c.dumpLogs()
		}
	})
	for _, m := range c.members {
		c.start(m.Name)
	}
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

// start runs the named node as a process and waits for /healthz. The
// process dies with the test binary (Pdeathsig) and is killed by cleanup.
func (c *cluster) start(name string) {
	c.t.Helper()
	m := c.member(name)
	logPath := filepath.Join(c.dir, fmt.Sprintf("%s-%d.log", name, time.Now().UnixNano()))
	logFile, err := os.Create(logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(meshNode, "--config="+c.cfgPath, "--name="+name,
		"--admin-addr="+m.Admin, "--data-addr="+m.Data, "--wire-addr="+m.Wire, "--drain-timeout=2s")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		c.t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { _ = cmd.Wait(); logFile.Close(); close(p.done) }()
	c.mu.Lock()
	c.procs[name] = p
	c.mu.Unlock()

	hc := http.Client{Timeout: 500 * time.Millisecond}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := hc.Get("http://" + m.Admin + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			c.t.Fatalf("%s exited during start", name)
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s not healthy after 10s: %v", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL to the named node and waits for it to be gone.
func (c *cluster) kill(name string) {
	c.mu.Lock()
	p := c.procs[name]
	delete(c.procs, name)
	c.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (c *cluster) killAll() {
	for _, m := range c.members {
		c.kill(m.Name)
	}
}

func (c *cluster) dumpLogs() {
	files, _ := filepath.Glob(filepath.Join(c.dir, "*.log"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		c.t.Logf("---- %s (last %d lines)\n%s", filepath.Base(f), len(lines), strings.Join(lines, "\n"))
	}
}

func (c *cluster) recordTopology(t *topology.Topology) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.record != nil && t.Epoch < c.record.Epoch {
		return fmt.Errorf("record: epoch %d is older than the recorded %d", t.Epoch, c.record.Epoch)
	}
	c.record = t.Clone()
	c.history = append(c.history, recorded{at: time.Now(), t: t.Clone()})
	return nil
}

func (c *cluster) recorded() *topology.Topology {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.record.Clone()
}

func (c *cluster) setCut(name string, cut bool) {
	c.renewMu.Lock()
	defer c.renewMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut[name] = cut
}

// lastPush is when the last push the lease keeper sent to name was sent
// and answered.
func (c *cluster) lastPush(name string) (sent, acked time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastSent[name], c.lastAcked[name]
}

// bootstrap records and pushes the initial topology, then runs the lease
// keeper until the test ends.
func (c *cluster) bootstrap() *topology.Topology {
	c.t.Helper()
	t0, err := topology.Initial("proc", c.members, baseShards, leaseMillis)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.recordTopology(t0); err != nil {
		c.t.Fatal(err)
	}
	c.renewOnce(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(leaseMillis * time.Millisecond / 3)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				c.renewOnce(ctx)
			}
		}
	}()
	c.t.Cleanup(func() { cancel(); <-done })
	return t0
}

// renewOnce pushes the record to every member not cut off, in parallel.
func (c *cluster) renewOnce(ctx context.Context) {
	c.renewMu.Lock()
	defer c.renewMu.Unlock()
	t := c.recorded()
	var wg sync.WaitGroup
	for _, m := range t.Members {
		c.mu.Lock()
		skip := c.cut[m.Name]
		c.mu.Unlock()
		if skip {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			sent := time.Now()
			if c.driver.Dial(m.Admin).PutTopology(cctx, t) == nil {
				c.mu.Lock()
				c.lastSent[m.Name], c.lastAcked[m.Name] = sent, time.Now()
				c.mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

func (c *cluster) client(ctx context.Context) *client.Client {
	c.t.Helper()
	var addrs []string
	for _, m := range c.members {
		addrs = append(addrs, m.Data)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: c.attempts}
	cl, err := client.New(ctx, client.Options{Addresses: addrs, HTTPClient: hc, RetryBase: 5 * time.Millisecond, RetryMax: 100 * time.Millisecond, Credentials: c.creds})
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// ingester writes unique payloads through the SDK from several goroutines
// (even ones keyed over 17 keys, odd ones keyless) and remembers what was
// acknowledged, with the time of each ack per shard.
type ingester struct {
	mu    sync.Mutex
	acked map[string]uint16
	// order is each writer's acknowledged events in the order they were
	// acknowledged (a writer sends its next event only after the ack).
	order [][]string
	// firstAck is the first ack per shard since the last mark.
	firstAck map[uint16]time.Time
	errs     []error
	seq      atomic.Int64
	stop     context.CancelFunc
	wg       sync.WaitGroup
}

func ingest(cl *client.Client, workers int) *ingester {
	ctx, cancel := context.WithCancel(context.Background())
	in := &ingester{acked: map[string]uint16{}, order: make([][]string, workers), firstAck: map[uint16]time.Time{}, stop: cancel}
	for w := range workers {
		in.wg.Add(1)
		go func() {
			defer in.wg.Done()
			for ctx.Err() == nil {
				n := in.seq.Add(1)
				// The payload is the event's id; the daemons read it.
				id := fmt.Sprintf(`{"id":"w%d-%d","key":"k%d","amount":%d,"ts":%d}`, w, n, n%5, n%7, n*10_000_000)
				ev := client.Event{Payload: []byte(id)}
				if w%2 == 0 {
					ev.Key = []byte(fmt.Sprintf("key-%d", n%17))
				}
				acks, err := cl.Ingest(ctx, ev)
				in.mu.Lock()
				if err == nil {
					in.acked[id] = acks[0].Shard
					in.order[w] = append(in.order[w], id)
					if _, ok := in.firstAck[acks[0].Shard]; !ok {
						in.firstAck[acks[0].Shard] = time.Now()
					}
				} else if ctx.Err() == nil {
					in.errs = append(in.errs, err)
				}
				in.mu.Unlock()
			}
		}()
	}
	return in
}

func (in *ingester) halt() {
	in.stop()
	in.wg.Wait()
}

// mark forgets the first acks seen so far.
func (in *ingester) mark() {
	in.mu.Lock()
	defer in.mu.Unlock()
	clear(in.firstAck)
}

// firstAckOf is the first ack of shard since the last mark.
func (in *ingester) firstAckOf(shard uint16) (time.Time, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	at, ok := in.firstAck[shard]
	return at, ok
}

func (in *ingester) count() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.acked)
}

// verify polls everything from the beginning and checks every
// acknowledged event against what was stored: present, on the shard it
// was acknowledged for, exactly once per send at most (see attempts), and
// seqs increasing per shard in poll order.
func (c *cluster) verify(ctx context.Context, cl *client.Client, in *ingester) {
	t := c.t
	t.Helper()
	if err := cl.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	p, err := cl.NewPoller("")
	if err != nil {
		t.Fatal(err)
	}
	// where an event is stored: a keyless event the SDK resent may have
	// landed on a different shard each time.
	type where struct {
		shards []uint16
		seqs   []uint64
		n      int
	}
	seen := map[string]*where{}
	last := map[uint16]uint64{}
	started := map[uint16]bool{}
	total := 0
	byShard := map[uint16][]compute.Event{}
	for {
		page, err := p.Poll(ctx, 2000)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.StalledShards) > 0 {
			t.Fatalf("stalled shards in the final poll: %v", page.StalledShards)
		}
		for _, e := range page.Events {
			if started[e.Shard] && e.Seq <= last[e.Shard] {
				t.Fatalf("shard %d: seq %d after %d in poll order", e.Shard, e.Seq, last[e.Shard])
			}
			started[e.Shard], last[e.Shard] = true, e.Seq
			w := seen[string(e.Payload)]
			if w == nil {
				w = &where{}
				seen[string(e.Payload)] = w
			}
			w.shards = append(w.shards, e.Shard)
			w.seqs = append(w.seqs, e.Seq)
			w.n++
			total++
			byShard[e.Shard] = append(byShard[e.Shard], compute.Event{Seq: e.Seq, Time: e.Time, Payload: e.Payload})
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
	missing, extra, resent := 0, 0, 0
	for id, shard := range in.acked {
		w, sends := seen[id], c.attempts.Sends(id)
		switch {
		case w == nil:
			missing++
			if missing <= 5 {
				t.Errorf("acknowledged event %s (shard %d) missing", id, shard)
			}
		case !slices.Contains(w.shards, shard):
			t.Errorf("event %s acknowledged for shard %d, stored on %v", id, shard, w.shards)
		case w.n > 1 && w.n > sends:
			extra++
			if extra <= 5 {
				t.Errorf("acknowledged event %s stored %d times, sent %d times", id, w.n, sends)
			}
		case w.n > 1:
			resent++
		}
	}
	if missing+extra > 0 {
		t.Fatalf("%d of %d acknowledged events missing, %d stored more often than sent", missing, len(in.acked), extra)
	}
	// Per-shard order as a writer sees it: an event sent after another
	// was acknowledged on the same shard is stored after every copy of
	// it, across handoffs and failovers (a shard keeps its seqs).
	for w, ids := range in.order {
		after := map[uint16]uint64{} // highest seq of the writer's last event per shard
		prev := map[uint16]string{}
		for _, id := range ids {
			shard, loc := in.acked[id], seen[id]
			lo, hi := ^uint64(0), uint64(0)
			for i, s := range loc.shards {
				if s == shard {
					lo, hi = min(lo, loc.seqs[i]), max(hi, loc.seqs[i])
				}
			}
			if p, ok := prev[shard]; ok && lo <= after[shard] {
				t.Fatalf("writer %d: %s (shard %d seq %d) acknowledged after %s but stored at or before its seq %d", w, id, shard, lo, p, after[shard])
			}
			after[shard], prev[shard] = hi, id
		}
	}
	if len(in.acked) == 0 {
		t.Fatal("nothing was acknowledged")
	}
	t.Logf("verified: %d acknowledged events, %d stored (%d shards); %d acknowledged events stored twice after an SDK resend", len(in.acked), total, len(started), resent)
	c.checkDaemons(ctx, byShard)
}

// checkDaemons checks that every daemon instance on each shard's owner
// (recorded topology), once it folded the owner's log, equals a reference
// fold of the shard's events as read back (a fresh compute.Host of the
// declared kind). Followers are not judged here: a cut-off or killed old
// owner may keep an unacknowledged suffix (node/orchestrate's daemon test
// checks warm follower copies).
func (c *cluster) checkDaemons(ctx context.Context, byShard map[uint16][]compute.Event) {
	t := c.t
	t.Helper()
	rec := c.recorded()
	checked := 0
	for _, s := range rec.Shards {
		evs := byShard[s.ID]
		for i, e := range evs {
			if e.Seq != uint64(i) {
				t.Fatalf("shard %d: seq %d at position %d (the reference fold needs the log from 0)", s.ID, e.Seq, i)
			}
		}
		for _, d := range c.daemons {
			if len(d.Shards) > 0 && !slices.Contains(d.Shards, int(s.ID)) {
				continue
			}
			var cfg []byte
			if len(d.Config) > 0 {
				cfg, _ = json.Marshal(d.Config)
			}
			dm, err := daemons.Builtins().New(d.Kind, d.Name, cfg)
			if err != nil {
				t.Fatal(err)
			}
			ref := compute.NewHost(d.Name, d.Kind, cfg, dm, compute.CursorAt(0), compute.HostConfig{})
			for _, e := range evs {
				if _, err := ref.Deliver(e); err != nil {
					t.Fatal(err)
				}
			}
			snap, err := ref.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			view, err := daemons.StateView(d.Kind, cfg, snap.State)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := json.Marshal(view)
			admin := c.driver.Dial(c.member(s.Owner).Admin).(*adminclient.HTTP)
			deadline := time.Now().Add(20 * time.Second)
			for {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				got, err := admin.Daemons(cctx)
				cancel()
				if err != nil {
					t.Fatalf("daemons of %s: %v", s.Owner, err)
				}
				i := slices.IndexFunc(got.Daemons, func(x node.DaemonStatus) bool { return x.Name == d.Name && x.Shard == s.ID })
				if i < 0 {
					t.Fatalf("owner %s of shard %d does not host daemon %s: %+v", s.Owner, s.ID, d.Name, got.Daemons)
				}
				ds := got.Daemons[i]
				if ds.Next < snap.Cursor.Next() && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				var state bytes.Buffer
				_ = json.Compact(&state, ds.State)
				if ds.Role != "owner" || ds.Next != snap.Cursor.Next() || !bytes.Equal(state.Bytes(), want) {
					t.Fatalf("shard %d daemon %s on %s: role %s next %d state %s; want owner, next %d, the reference fold %s",
						s.ID, d.Name, s.Owner, ds.Role, ds.Next, state.Bytes(), snap.Cursor.Next(), want)
				}
				checked++
				break
			}
		}
	}
	t.Logf("verified: %d daemon instances on the shards' owners equal a reference fold", checked)
}

// ownedBy returns the shards name owns in the recorded topology.
func (c *cluster) ownedBy(name string) []uint16 { return c.recorded().OwnedBy(name) }

// keyFor returns a key of shard id.
func keyFor(id uint16, i int) []byte {
	for k := 0; ; k++ {
		key := []byte(fmt.Sprintf("probe-%d-%d", i, k))
		if topology.KeyShard(key, baseShards) == id {
			return key
		}
	}
}

// dataToken is a Mesh-Token header value for direct data-API calls.
func (c *cluster) dataToken() string {
	c.t.Helper()
	tok, err := c.creds.Token(identity.DataScope, 10*time.Minute, time.Now())
	if err != nil {
		c.t.Fatal(err)
	}
	return tok.EncodeHeader()
}
