package orchestrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/client"
	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/compute/daemons"
	"github.com/purplerain/mesh-operator/node"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/topology"
)

// poisonKind is a user daemon kind: a counter that fails (a Process error,
// so its feed halts) on every event whose payload says "poison".
const poisonKind = "poison-counter"

type poisonDaemon struct{ compute.MeshDaemon }

func (p poisonDaemon) Process(ev compute.Event) ([][]byte, error) {
	if bytes.Contains(ev.Payload, []byte(`"poison"`)) {
		return nil, errors.New("user daemon refuses a poisoned event")
	}
	return p.MeshDaemon.Process(ev)
}

func poisonKinds(t *testing.T) *compute.Kinds {
	k := daemons.Builtins()
	if err := k.Register(poisonKind, func(name string, config []byte) (compute.MeshDaemon, error) {
		d, err := daemons.NewCounter(name, config)
		return poisonDaemon{d}, err
	}); err != nil {
		t.Fatal(err)
	}
	return k
}

// poisonCluster starts two actives (addresses from prefix.ip) running the
// guard daemon (poisonKind) on shard 0 and a counter on every shard, with
// configure applied to each node's config first, and bootstraps them. It
// returns the cluster, its topology and shard 0's owner (from) and the
// other active (to).
func poisonCluster(t *testing.T, ctx context.Context, ip int, configure func(*nodeconfig.Config)) (c *cluster, t0 *topology.Topology, from, to string) {
	t.Helper()
	c = newClusterKinds(t, "127.0.5", ip, 2, 0, "Leader", 10_000, func(cfg *nodeconfig.Config) {
		configure(cfg)
		cfg.Daemons = []nodeconfig.Daemon{
			{Name: "guard", Kind: poisonKind, Shards: []int{0}},
			{Name: "visits", Kind: daemons.KindCounter},
		}
	}, poisonKinds(t))
	t0 = c.bootstrap(ctx)
	s0, _ := t0.Shard(0)
	from, to = s0.Owner, "a0"
	if from == "a0" {
		to = "a1"
	}
	return c, t0, from, to
}

// shard0Key is the first key "k<i>-<j>" of shard 0 in t0.
func shard0Key(t0 *topology.Topology, i int) []byte {
	for j := 0; ; j++ {
		k := fmt.Appendf(nil, "k%d-%d", i, j)
		if topology.KeyShard(k, t0.BaseShards) == 0 {
			return k
		}
	}
}

// TestHaltedDaemonMovesWithItsShardAndStaysHalted: a user daemon on shard
// 0 halts on a poisoned event (a Process error) at the owner. A handoff of
// shard 0 still completes (the halted daemon does not hold it back), and
// on the new owner the daemon arrives halted at the same position with the
// same error, while the other daemon on the shard moved running and
// complete. The old owner keeps the same halted copy as a follower.
func TestHaltedDaemonMovesWithItsShardAndStaysHalted(t *testing.T) {
	ctx := context.Background()
	c, t0, from, to := poisonCluster(t, ctx, 140, func(*nodeconfig.Config) {})
	cl := c.client(ctx)
	send := func(i int, kind string) {
		t.Helper()
		if _, err := cl.Ingest(ctx, client.Event{Key: shard0Key(t0, i), Payload: fmt.Appendf(nil, `{"key":"u%d","kind":%q}`, i%3, kind)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		send(i, "ok")
	}
	send(20, "poison") // seq 20 of shard 0
	for i := 21; i < 40; i++ {
		send(i, "ok")
	}

	// halted waits until name's daemon on shard 0 at member is halted and
	// returns its status.
	halted := func(member, name string) node.DaemonStatus {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			for _, d := range c.daemons(ctx, member).Daemons {
				if d.Name == name && d.Shard == 0 && !d.Running && d.Error != "" {
					return d
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s on shard 0 did not halt: %+v", member, name, c.daemons(ctx, member).Daemons)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	before := halted(from, "guard")
	// (A user kind has no state view, so its state is not compared; the
	// built-in visits daemon's is, below.)
	if before.Next != 20 || !strings.Contains(before.Error, "poisoned event") {
		t.Fatalf("owner's guard halted at %d with %q, want at the poisoned seq 20 with the daemon's error", before.Next, before.Error)
	}

	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	moved, err := c.driver.Handoff(hctx, t0, topology.Move{Shard: 0, From: from, To: to})
	if err != nil {
		t.Fatalf("handoff with a halted daemon on the shard: %v", err)
	}
	if s, _ := moved.Shard(0); s.Owner != to {
		t.Fatalf("shard 0 owned by %s after the handoff, want %s", s.Owner, to)
	}
	for _, member := range []string{to, from} {
		got := halted(member, "guard")
		if got.Next != before.Next || got.Error != before.Error || got.Through == nil || *got.Through != *before.Through ||
			!bytes.Equal(got.State, before.State) {
			t.Fatalf("%s after the handoff: guard next %d through %v error %q state %s; want the old owner's halted daemon: next %d error %q state %s",
				member, got.Next, got.Through, got.Error, got.State, before.Next, before.Error, before.State)
		}
		wantRole := "owner"
		if member == from {
			wantRole = "follower"
		}
		if got.Role != wantRole {
			t.Fatalf("%s's guard has role %q, want %q", member, got.Role, wantRole)
		}
	}
	// The running daemon on the shard moved complete, with the state the
	// old owner (now following) has.
	visits := func(member string) node.DaemonStatus {
		for _, d := range c.daemons(ctx, member).Daemons {
			if d.Name == "visits" && d.Shard == 0 {
				return d
			}
		}
		return node.DaemonStatus{}
	}
	if got, want := visits(to), visits(from); !got.Running || got.Next != 40 || !bytes.Equal(got.State, want.State) || len(got.State) < 3 {
		t.Fatalf("new owner's visits on shard 0: running %v next %d state %s; want running at 40 with the old owner's state %s", got.Running, got.Next, got.State, want.State)
	}
}

// TestHandoffOfAShardWhoseLogWasPrunedPastAHaltedDaemon: the guard daemon
// halts on a poisoned event, then the owner ingests and prunes far past
// it (retention 50 events). The new owner starts from an empty log, which
// the owner can no longer stream from seq 0: it is resynced from the
// owner's log head and daemon snapshots, so the handoff completes instead
// of waiting for a backfill that can never happen. On both nodes the guard
// is halted at the poisoned seq (its feed, restarted at each topology
// change, finds the log it needs pruned), and the running daemon arrives
// with the old owner's state.
func TestHandoffOfAShardWhoseLogWasPrunedPastAHaltedDaemon(t *testing.T) {
	ctx := context.Background()
	c, t0, from, to := poisonCluster(t, ctx, 150, func(cfg *nodeconfig.Config) {
		cfg.Retention = nodeconfig.Retention{MaxEvents: 50}
	})
	cl := c.client(ctx)
	var batch []client.Event
	for i := range 300 {
		kind := "ok"
		if i == 20 {
			kind = "poison"
		}
		batch = append(batch, client.Event{Key: shard0Key(t0, i), Payload: fmt.Appendf(nil, `{"key":"u%d","kind":%q}`, i%3, kind)})
	}
	for len(batch) > 0 {
		n := min(len(batch), 50)
		if _, err := cl.Ingest(ctx, batch[:n]...); err != nil {
			t.Fatal(err)
		}
		batch = batch[n:]
	}
	// The owner's retention (swept every second) prunes past seq 20.
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := c.driver.status(ctx, t0, from)
		if err != nil {
			t.Fatal(err)
		}
		first := uint64(0)
		for _, s := range st.Shards {
			if s.ID == 0 {
				first = s.First
			}
		}
		if first > 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("owner's retention did not prune shard 0 past seq 20: %+v", st.Shards)
		}
		time.Sleep(50 * time.Millisecond)
	}
	daemon := func(member, name string) node.DaemonStatus {
		for _, d := range c.daemons(ctx, member).Daemons {
			if d.Name == name && d.Shard == 0 {
				return d
			}
		}
		t.Fatalf("%s hosts no %s on shard 0", member, name)
		return node.DaemonStatus{}
	}
	guard := daemon(from, "guard")
	if guard.Running || guard.Next != 20 {
		t.Fatalf("owner's guard: running %v next %d, want halted at 20", guard.Running, guard.Next)
	}

	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := c.driver.Handoff(hctx, t0, topology.Move{Shard: 0, From: from, To: to}); err != nil {
		t.Fatalf("handoff of a shard pruned past a halted daemon: %v", err)
	}
	for _, member := range []string{to, from} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			g := daemon(member, "guard")
			if !g.Running && g.Next == 20 && strings.Contains(g.Error, "pruned") && bytes.Equal(g.State, guard.State) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's guard after the handoff: running %v next %d error %q state %s; want halted at 20 with the old owner's state %s (the log it needs is pruned)",
					member, g.Running, g.Next, g.Error, g.State, guard.State)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The running daemon arrived with the old owner's state (restored from
	// its snapshot: the new owner's log starts past seq 0).
	deadline = time.Now().Add(10 * time.Second)
	for {
		got, want := daemon(to, "visits"), daemon(from, "visits")
		if got.Running && got.Next == 300 && want.Next == 300 && bytes.Equal(got.State, want.State) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new owner's visits: running %v next %d state %s; old owner's: next %d state %s", got.Running, got.Next, got.State, want.Next, want.State)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
