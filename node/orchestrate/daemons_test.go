package orchestrate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/client"
	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/compute/daemons"
	"github.com/purplerain/mesh-operator/node"
	"github.com/purplerain/mesh-operator/node/adminclient"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/topology"
)

// daemonDecls are the daemons the daemon tests declare: a counter on
// every base shard and a sum on shards 0 and 1 only.
var daemonDecls = []nodeconfig.Daemon{
	{Name: "visits", Kind: daemons.KindCounter, Config: map[string]string{"keyField": "user"}},
	{Name: "spend", Kind: daemons.KindSum, Shards: []int{0, 1},
		Config: map[string]string{"field": "amount", "window": "1s", "keyField": "user", "timeField": "ts"}},
}

func withDaemons(cfg *nodeconfig.Config) { cfg.Daemons = daemonDecls }

// daemonPayload is a JSON event both daemons read: five users, amounts
// 0..6, event times 10ms apart (so sum windows close while ingesting).
func daemonPayload(id string, n int64) []byte {
	return fmt.Appendf(nil, `{"id":%q,"user":"u%d","amount":%d,"ts":%d}`, id, n%5, n%7, n*10_000_000)
}

// TestDaemonsMoveWithHandoffAndPromotion runs a counter and a sum daemon on
// a 2-active + 1-standby cluster under SDK ingest, hands shard 0 off from
// a0 to a1, then fails a1 and promotes the standby. After each step every
// daemon instance on every reachable node (owners and warm follower
// copies) equals a reference fold of its shard's events read back through
// the SDK.
func TestDaemonsMoveWithHandoffAndPromotion(t *testing.T) {
	ctx := context.Background()
	c := newClusterAt(t, "127.0.5", 10, 2, 1, "Standby", 900, withDaemons)
	t0 := c.bootstrap(ctx)
	var failed atomicName
	rctx, stopRenew := context.WithCancel(ctx)
	rwg := c.renew(rctx, func(n string) bool { return n == failed.get() })
	defer func() { stopRenew(); rwg.Wait() }()
	cl := c.client(ctx)

	if got := c.daemonShards(ctx, "a1", "visits"); slices.Contains(got, 0) {
		t.Fatalf("a1 hosts visits on shard 0 before it follows it: %v", got)
	}

	// At the moment the cutover is recorded (the shard still fenced at a0,
	// its log final), a1's copies must already have folded all of it: the
	// cutover hands over state equal to the old owner's, not state that
	// catches up later.
	var atCutover []string
	c.mu.Lock()
	c.onRecord = func(rec *topology.Topology) {
		if s, _ := rec.Shard(0); s.Owner != "a1" {
			return
		}
		st, err := c.driver.Dial(c.member("a0").Admin).Status(ctx)
		if err != nil {
			atCutover = append(atCutover, err.Error())
			return
		}
		ownerNext, _, _, fenced, ok := shardStatus(st, 0, "owner")
		if !ok || !fenced {
			atCutover = append(atCutover, fmt.Sprintf("a0 does not hold shard 0 fenced at the cutover: %+v", st.Shards))
			return
		}
		n := 0
		for _, d := range c.daemons(ctx, "a1").Daemons {
			if d.Shard != 0 {
				continue
			}
			n++
			if d.Next != ownerNext {
				atCutover = append(atCutover, fmt.Sprintf("a1's %s at next %d when the cutover was recorded, the fenced log ends at %d", d.Name, d.Next, ownerNext))
			}
		}
		if n != 2 {
			atCutover = append(atCutover, fmt.Sprintf("a1 hosts %d daemons on shard 0 at the cutover, want 2", n))
		}
	}
	c.mu.Unlock()

	// Handoff under ingest.
	ictx, stop := context.WithCancel(ctx)
	in, wg := ingestWith(ictx, cl, 4, daemonPayload)
	time.Sleep(300 * time.Millisecond)
	moved, err := c.driver.Handoff(ctx, t0, topology.Move{Shard: 0, From: "a0", To: "a1"})
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.onRecord = nil
	c.mu.Unlock()
	if len(atCutover) > 0 {
		t.Fatalf("at the cutover: %v", atCutover)
	}
	time.Sleep(200 * time.Millisecond)
	stop()
	wg.Wait()
	verify(t, ctx, cl, in, c.attempts)
	c.checkDaemons(ctx, cl, moved)
	if role := c.daemonRole(ctx, "a1", "spend", 0); role != "owner" {
		t.Fatalf("a1's spend on shard 0 after the handoff has role %q, want owner", role)
	}
	if role := c.daemonRole(ctx, "a0", "spend", 0); role != "follower" {
		t.Fatalf("a0's spend on shard 0 after the handoff has role %q, want follower (it follows the shard)", role)
	}

	// Fail a1 (now the owner of 0, 1 and 3) and promote the standby.
	ictx, stop = context.WithCancel(ctx)
	in, wg = ingestWith(ictx, cl, 4, daemonPayload)
	time.Sleep(300 * time.Millisecond)
	failed.set("a1")
	lastPush := time.Now()
	c.stop("a1")
	promoted, err := c.driver.Promote(ctx, c.recorded(), "a1", lastPush)
	if err != nil {
		t.Fatal(err)
	}
	// The promoted standby owns warm copies at once: they already folded
	// the replicated log, nothing starts from empty.
	warm := c.daemons(ctx, "s0")
	for _, id := range moved.OwnedBy("a1") {
		for _, d := range warm.Daemons {
			if d.Shard == id && (d.Role != "owner" || d.Next == 0) {
				t.Fatalf("s0 right after promotion: %s on shard %d has role %q next %d, want a warm owner copy", d.Name, id, d.Role, d.Next)
			}
		}
	}
	// a1 returns as a standby (memory storage: empty) so ackPolicy Standby
	// finds followers again; its daemon copies rebuild from the log.
	c.start("a1")
	failed.set("")
	if err := c.driver.Push(ctx, promoted, "a1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	stop()
	wg.Wait()
	verify(t, ctx, cl, in, c.attempts)
	c.checkDaemons(ctx, cl, promoted)
}

func (c *cluster) daemons(ctx context.Context, name string) (out struct {
	Daemons []node.DaemonStatus
}) {
	c.t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d, err := c.driver.Dial(c.member(name).Admin).(*adminclient.HTTP).Daemons(cctx)
	if err != nil {
		c.t.Fatalf("daemons of %s: %v", name, err)
	}
	out.Daemons = d.Daemons
	return out
}

func (c *cluster) daemonShards(ctx context.Context, name, daemon string) []uint16 {
	var out []uint16
	for _, d := range c.daemons(ctx, name).Daemons {
		if d.Name == daemon {
			out = append(out, d.Shard)
		}
	}
	return out
}

func (c *cluster) daemonRole(ctx context.Context, name, daemon string, shard uint16) string {
	for _, d := range c.daemons(ctx, name).Daemons {
		if d.Name == daemon && d.Shard == shard {
			return d.Role
		}
	}
	return ""
}

// checkDaemons reads every shard back through the SDK, folds each declared
// daemon over it with a fresh compute.Host (the reference), and checks that
// every running node hosts exactly the instances t implies (owner and
// follower roles) and that each, once it has folded the whole shard,
// reports the reference's through-seq and state.
func (c *cluster) checkDaemons(ctx context.Context, cl *client.Client, t *topology.Topology) {
	c.t.Helper()
	if err := cl.Refresh(ctx); err != nil {
		c.t.Fatal(err)
	}
	events := map[uint16][]compute.Event{}
	p, err := cl.NewPoller("")
	if err != nil {
		c.t.Fatal(err)
	}
	for {
		page, err := p.Poll(ctx, 1000)
		if err != nil {
			c.t.Fatal(err)
		}
		for _, e := range page.Events {
			evs := events[e.Shard]
			if uint64(len(evs)) != e.Seq {
				c.t.Fatalf("shard %d: read seq %d after %d events (not dense from 0)", e.Shard, e.Seq, len(evs))
			}
			events[e.Shard] = append(evs, compute.Event{Seq: e.Seq, Time: e.Time, Payload: e.Payload})
		}
		if !page.HasMore && len(page.Events) == 0 {
			break
		}
	}

	type ref struct {
		next  uint64
		state []byte
	}
	refs := map[string]ref{} // "name/shard"
	for _, s := range t.Shards {
		for _, d := range daemonDecls {
			if len(d.Shards) > 0 && !slices.Contains(d.Shards, int(s.ID)) {
				continue
			}
			cfg, _ := json.Marshal(d.Config)
			dm, err := daemons.Builtins().New(d.Kind, d.Name, cfg)
			if err != nil {
				c.t.Fatal(err)
			}
			h := compute.NewHost(d.Name, d.Kind, cfg, dm, compute.CursorAt(0), compute.HostConfig{})
			for _, ev := range events[s.ID] {
				if _, err := h.Deliver(ev); err != nil {
					c.t.Fatal(err)
				}
			}
			snap, err := h.Snapshot()
			if err != nil {
				c.t.Fatal(err)
			}
			v, err := daemons.StateView(d.Kind, cfg, snap.State)
			if err != nil {
				c.t.Fatal(err)
			}
			b, _ := json.Marshal(v)
			refs[fmt.Sprintf("%s/%d", d.Name, s.ID)] = ref{next: snap.Cursor.Next(), state: b}
		}
	}

	c.mu.Lock()
	var running []string
	for name := range c.nodes {
		running = append(running, name)
	}
	c.mu.Unlock()
	sort.Strings(running)
	checked := 0
	for _, name := range running {
		want := map[string]string{} // instance -> role
		for _, s := range t.Shards {
			role := ""
			if s.Owner == name {
				role = "owner"
			} else if slices.Contains(s.Followers, name) {
				role = "follower"
			}
			if role == "" {
				continue
			}
			for _, d := range daemonDecls {
				if len(d.Shards) == 0 || slices.Contains(d.Shards, int(s.ID)) {
					want[fmt.Sprintf("%s/%d", d.Name, s.ID)] = role
				}
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := c.daemons(ctx, name).Daemons
			behind := ""
			have := map[string]string{}
			for _, d := range got {
				k := fmt.Sprintf("%s/%d", d.Name, d.Shard)
				have[k] = d.Role
				r := refs[k]
				if d.Next < r.next && behind == "" {
					behind = fmt.Sprintf("%s at %d of %d", k, d.Next, r.next)
				}
			}
			if fmt.Sprint(have) != fmt.Sprint(want) {
				c.t.Fatalf("%s hosts %v, want %v", name, have, want)
			}
			if behind != "" {
				if time.Now().After(deadline) {
					c.t.Fatalf("%s: daemon %s did not fold its shard in time", name, behind)
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
			for _, d := range got {
				k := fmt.Sprintf("%s/%d", d.Name, d.Shard)
				r := refs[k]
				if d.Next != r.next || (r.next > 0 && (d.Through == nil || *d.Through != r.next-1)) {
					c.t.Fatalf("%s: %s next %d through %v, want next %d (the shard's log)", name, k, d.Next, d.Through, r.next)
				}
				var state bytes.Buffer
				if err := json.Compact(&state, d.State); err != nil {
					c.t.Fatalf("%s: %s state %q: %v", name, k, d.State, err)
				}
				if !bytes.Equal(state.Bytes(), r.state) {
					c.t.Fatalf("%s (%s): %s state\n%s\nwant the reference fold\n%s", name, d.Role, k, state.Bytes(), r.state)
				}
				if !d.Running || d.Error != "" {
					c.t.Fatalf("%s: %s running %v error %q", name, k, d.Running, d.Error)
				}
				checked++
			}
			break
		}
	}
	c.t.Logf("epoch %d: %d daemon instances equal their reference fold (%d events)", t.Epoch, checked, total(events))
}

func total(m map[uint16][]compute.Event) int {
	n := 0
	for _, evs := range m {
		n += len(evs)
	}
	return n
}
