package node

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/topology"
)

// TestStandbyIngestRefusedForAFenceOrMoveAppendedNothing is
// TestIngestRefusedForAFenceOrMoveAppendedNothing under ackPolicy Standby:
// owner a serves replication of shard 0 on loopback to a real follower b,
// so every acknowledgement waits for b to have the events. Writers ingest
// into a while shard 0 is fenced, handed to b (after b caught up with the
// fenced log, as a handoff does) and handed back, over and over. An event
// refused as "moving" or "not owner" must not be in a's log (the SDK
// resends it) and every acknowledged event must be in it exactly once.
// Ingest used to re-check the shard after the Standby wait, so an event
// appended before a fence and replicated during it was refused as
// "moving" although the handoff carried it.
func TestStandbyIngestRefusedForAFenceOrMoveAppendedNothing(t *testing.T) {
	const aHost, bHost = "127.0.36.1", "127.0.36.2"
	ck, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	open := func(name string) *Node {
		t.Helper()
		n, err := New(Options{Name: name, ClusterKey: ck, Logger: slog.New(slog.DiscardHandler), Config: &nodeconfig.Config{
			AckPolicy: "Standby",
			Storage:   nodeconfig.Storage{Mode: "Memory", Fsync: "Never"},
		}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := n.Close(); err != nil {
				t.Errorf("close %s: %v", name, err)
			}
		})
		return n
	}
	a := open("a")
	srv, addr := serveReplication(t, a, ck, a.ClusterKey, aHost) // stops before a closes
	a.SetReplicas(srv)
	b := open("b") // closes first: its follower stops before a's server
	topo := func(epoch uint64, owner string, fenced bool) *topology.Topology {
		tp := &topology.Topology{
			Cluster: "demo", Epoch: epoch, LeaseMillis: 600_000, BaseShards: 2,
			Members: []topology.Member{
				{Name: "a", Role: topology.Active, Data: aHost + ":1", Wire: addr},
				{Name: "b", Role: topology.Active, Data: bHost + ":1", Wire: bHost + ":2"},
			},
			Shards: []topology.Shard{{ID: 0, Owner: owner, Fenced: fenced}, {ID: 1, Owner: "b"}},
		}
		if owner == "a" {
			tp.Shards[0].Followers = []string{"b"}
		}
		return tp
	}
	apply := func(tp *topology.Topology) error {
		for _, n := range []*Node{a, b} {
			if err := n.ApplyTopology(tp); err != nil {
				return fmt.Errorf("%s at epoch %d: %w", n.Name(), tp.Epoch, err)
			}
		}
		return nil
	}
	if err := apply(topo(1, "a", false)); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu      sync.Mutex
		acked   = map[string]bool{}
		refused = map[string]error{}
		wg      sync.WaitGroup
		fences  atomic.Int64
		spanned atomic.Int64 // acknowledged, and a fence came between the call and the answer
	)
	stop := func() { cancel(); wg.Wait() }
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				// Keyless: a owns only shard 0, so every accepted event goes there.
				p := fmt.Sprintf("w%d-%d", w, i)
				before := fences.Load()
				// Not ctx: the end of the test must not turn a wait into
				// an ambiguous refusal. Replication always resumes, so
				// this bound only keeps a broken run from hanging.
				ictx, icancel := context.WithTimeout(context.Background(), 60*time.Second)
				_, err := a.Ingest(ictx, []dataapi.Event{{Payload: []byte(p)}})
				icancel()
				if err == nil && fences.Load() != before {
					spanned.Add(1)
				}
				mu.Lock()
				if err == nil {
					acked[p] = true
				} else {
					refused[p] = err
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(50 * time.Microsecond) // as a client backs off
				}
			}
		})
	}
	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	epoch := uint64(1)
	for cycle := range 30 {
		// Fence while writes are being acknowledged, so some are waiting
		// for b when it lands.
		from := ackedCount()
		deadline := time.Now().Add(30 * time.Second)
		for ackedCount() < from+20 {
			if time.Now().After(deadline) {
				stop()
				t.Fatalf("cycle %d: no acknowledgements for 30s (%d so far)", cycle, ackedCount())
			}
			time.Sleep(100 * time.Microsecond)
		}
		epoch++
		fences.Add(1)
		if err := apply(topo(epoch, "a", true)); err != nil {
			stop()
			t.Fatal(err)
		}
		// The handoff: b catches up with the fenced log (nothing is
		// appended after the fence), then owns the shard, then gives it back.
		ol, _ := a.Log(0)
		if head := ol.NextSeq(); head > 0 {
			wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := srv.WaitReplicated(wctx, 0, head-1)
			wcancel()
			if err != nil {
				stop()
				t.Fatalf("cycle %d: b did not catch up with the fenced log: %v", cycle, err)
			}
		}
		for _, owner := range []string{"b", "a"} {
			epoch++
			if err := apply(topo(epoch, owner, false)); err != nil {
				stop()
				t.Fatal(err)
			}
		}
	}
	stop()

	moving := checkFenceContract(t, a, acked, refused)
	if len(acked) == 0 || moving == 0 || spanned.Load() == 0 {
		t.Fatalf("%d acknowledged (%d across a fence), %d refused as moving: the writes did not meet the fences",
			len(acked), spanned.Load(), moving)
	}
	t.Logf("%d acknowledged (%d across a fence), %d refused (%d as moving), %d topology changes",
		len(acked), spanned.Load(), len(refused), moving, epoch-1)
}
