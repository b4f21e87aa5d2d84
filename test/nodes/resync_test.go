package nodes

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/client"
	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/compute/daemons"
	"github.com/purplerain/mesh-operator/node"
	"github.com/purplerain/mesh-operator/node/adminclient"
)

// TestRestartedStandbyResyncsFromOwnersThatPrunedPastIt runs the four
// mesh-node processes with retention (120 events a shard, swept every
// second). The standby s0 follows every shard; it is killed (memory
// storage: it comes back empty), the owners ingest far past their
// retention and prune, and s0 restarts. Its followers need seq 0, which no
// owner retains: each is resynced from its owner's log head and daemon
// snapshots. Then every followed shard on s0 ends where its owner's log
// ends, starts past what was pruned, and every warm daemon copy on s0
// equals a reference fold of all the events ever sent to the shard.
func TestRestartedStandbyResyncsFromOwnersThatPrunedPastIt(t *testing.T) {
	c := newCluster(t, 140, "Leader")
	c.setConfig(func(doc map[string]any) { doc["retention"] = map[string]any{"maxEvents": 120} })
	c.bootstrap()
	ctx := context.Background()
	cl := c.client(ctx)

	// sent is every event sent, by shard, in its order there: each batch
	// holds one shard's events and goes to its owner whole.
	sent := map[uint16][]compute.Event{}
	n := 0
	send := func(perShard int) {
		t.Helper()
		for shard := range uint16(baseShards) {
			for done := 0; done < perShard; {
				var batch []client.Event
				for ; done < perShard && len(batch) < 50; done++ {
					p := fmt.Appendf(nil, `{"id":"e%d","key":"k%d","amount":%d,"ts":%d}`, n, n%5, n%7, int64(n)*10_000_000)
					batch = append(batch, client.Event{Key: keyFor(shard, n), Payload: p})
					sent[shard] = append(sent[shard], compute.Event{Seq: uint64(len(sent[shard])), Payload: p})
					n++
				}
				acks, err := cl.Ingest(ctx, batch...)
				if err != nil {
					t.Fatal(err)
				}
				for _, a := range acks {
					if a.Shard != shard {
						t.Fatalf("event for shard %d acknowledged on %d", shard, a.Shard)
					}
				}
			}
		}
	}
	status := func(name string) map[uint16]node.ShardStatus {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		st, err := c.driver.Dial(c.member(name).Admin).Status(cctx)
		if err != nil {
			t.Fatalf("status of %s: %v", name, err)
		}
		out := map[uint16]node.ShardStatus{}
		for _, s := range st.Shards {
			out[s.ID] = s
		}
		return out
	}
	owners := func() map[uint16]node.ShardStatus {
		out := map[uint16]node.ShardStatus{}
		for _, name := range []string{"a0", "a1", "a2"} {
			for id, s := range status(name) {
				if s.Role == "owner" {
					out[id] = s
				}
			}
		}
		return out
	}
	// s0 caught up: every followed shard ends where its owner's does, and
	// its daemons folded all of it.
	caughtUp := func() (map[uint16]node.ShardStatus, map[uint16]node.ShardStatus) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			own, fol := owners(), status("s0")
			done := len(fol) == baseShards
			for id, o := range own {
				f := fol[id]
				if f.Role != "follower" || f.Next != o.Next || (f.Daemons > 0 && f.DaemonNext != f.Next) {
					done = false
				}
			}
			if done {
				return own, fol
			}
			if time.Now().After(deadline) {
				t.Fatalf("s0 did not catch up: owners %+v\ns0 %+v", own, fol)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	send(60)
	caughtUp()
	c.kill("s0")
	send(400)
	// Every owner prunes past seq 0 (retention sweeps every second).
	deadline := time.Now().Add(20 * time.Second)
	for {
		pruned := 0
		for _, o := range owners() {
			if o.First > 60 {
				pruned++
			}
		}
		if pruned == baseShards {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("owners did not prune past seq 60: %+v", owners())
		}
		time.Sleep(100 * time.Millisecond)
	}

	c.start("s0") // empty; the lease keeper pushes it the topology
	own, fol := caughtUp()
	for id, f := range fol {
		if f.First <= 60 || f.First > own[id].Next || f.Next != uint64(len(sent[id])) {
			t.Fatalf("shard %d on s0 holds [%d, %d) after the resync; owner [%d, %d), %d events sent", id, f.First, f.Next, own[id].First, own[id].Next, len(sent[id]))
		}
	}

	// Every warm copy on s0 equals the reference fold of the whole shard.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	got, err := c.driver.Dial(c.member("s0").Admin).(*adminclient.HTTP).Daemons(cctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for id := range uint16(baseShards) {
		for _, d := range c.daemons {
			if len(d.Shards) > 0 && !slices.Contains(d.Shards, int(id)) {
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
			for _, e := range sent[id] {
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
			i := slices.IndexFunc(got.Daemons, func(x node.DaemonStatus) bool { return x.Name == d.Name && x.Shard == id })
			if i < 0 {
				t.Fatalf("s0 hosts no %s on shard %d: %+v", d.Name, id, got.Daemons)
			}
			ds := got.Daemons[i]
			var state bytes.Buffer
			_ = json.Compact(&state, ds.State)
			if ds.Role != "follower" || !ds.Running || ds.Next != snap.Cursor.Next() || !bytes.Equal(state.Bytes(), want) {
				t.Fatalf("s0's %s on shard %d: role %s running %v error %q next %d state %s; want a running follower copy at %d equal to the reference fold %s",
					d.Name, id, ds.Role, ds.Running, ds.Error, ds.Next, state.Bytes(), snap.Cursor.Next(), want)
			}
			checked++
		}
	}
	t.Logf("s0 resynced %d shards; %d warm daemon copies equal their reference fold", baseShards, checked)
}

// setConfig rewrites the nodes' configuration file with edit applied and
// restarts every node so it reads it (before bootstrap).
func (c *cluster) setConfig(edit func(doc map[string]any)) {
	c.t.Helper()
	b, err := os.ReadFile(c.cfgPath)
	if err != nil {
		c.t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		c.t.Fatal(err)
	}
	edit(doc)
	if b, err = json.Marshal(doc); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(c.cfgPath, b, 0o600); err != nil {
		c.t.Fatal(err)
	}
	for _, m := range c.members {
		c.kill(m.Name)
		c.start(m.Name)
	}
}
