package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/topology"
)

// TestIngestRefusedForAFenceOrMoveAppendedNothing writes while shard 0 is
// fenced, moved away and moved back over and over (a new epoch each
// time), and checks the SDK's contract on the node side: an event refused
// as "moving" or "not owner" is not in the log (the SDK resends it, so a
// stored copy would be a duplicate the client cannot account for), and
// every acknowledged event is in it exactly once. The fence used to land
// between an ingest's append and its final check, which refused an
// event already stored.
func TestIngestRefusedForAFenceOrMoveAppendedNothing(t *testing.T) {
	n, _ := newNode(t, "a")
	topo := func(epoch uint64, owner string, fenced bool) *topology.Topology {
		tp := twoNodes(epoch)
		tp.Shards[0].Owner, tp.Shards[0].Fenced = owner, fenced
		return tp
	}
	if err := n.ApplyTopology(topo(1, "a", false)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu      sync.Mutex
		acked   = map[string]bool{}
		refused = map[string]error{}
		wg      sync.WaitGroup
	)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				// Keyless: a owns only shard 0, so every accepted event goes there.
				p := fmt.Sprintf("w%d-%d", w, i)
				_, err := n.Ingest(context.Background(), []dataapi.Event{{Payload: []byte(p)}})
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
	// fenced, moved to b, back to a: the steps of a handoff and its return.
	epoch := uint64(1)
	for range 150 {
		for _, step := range []struct {
			owner  string
			fenced bool
		}{{"a", true}, {"b", false}, {"a", false}} {
			if step.owner == "a" && step.fenced {
				// Fence while writes are being acknowledged, so some are
				// between their check and their ack when it lands.
				mu.Lock()
				from := len(acked)
				mu.Unlock()
				for {
					mu.Lock()
					k := len(acked)
					mu.Unlock()
					if k >= from+20 {
						break
					}
					time.Sleep(20 * time.Microsecond)
				}
			}
			epoch++
			if err := n.ApplyTopology(topo(epoch, step.owner, step.fenced)); err != nil {
				cancel()
				wg.Wait()
				t.Fatalf("epoch %d: %v", epoch, err)
			}
		}
	}
	cancel()
	wg.Wait()

	moving := checkFenceContract(t, n, acked, refused)
	if len(acked) == 0 || moving == 0 {
		t.Fatalf("%d acknowledged, %d refused as moving: the writes did not meet the fences", len(acked), moving)
	}
	t.Logf("%d acknowledged, %d refused (%d as moving), %d topology changes", len(acked), len(refused), moving, epoch-1)
}

// checkFenceContract reads n's whole log and checks the ingest contract
// the fence tests pin: an event refused as "moving" or "not owner" is not
// stored, every acknowledged event is stored exactly once, and nothing was
// refused for another reason. It returns how many were refused as moving.
func checkFenceContract(t *testing.T, n *Node, acked map[string]bool, refused map[string]error) (moving int) {
	t.Helper()
	stored := map[string]int{}
	cursor := ""
	for {
		page, err := n.Poll(context.Background(), dataapi.PollRequest{Cursor: cursor, Limit: dataapi.MaxPollLimit})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Events {
			stored[string(e.Payload)]++
		}
		cursor = page.Cursor
		if !page.HasMore && len(page.Events) == 0 {
			break
		}
	}
	var noe *NotOwnerError
	for p, err := range refused {
		if !errors.Is(err, ErrShardMoving) && !errors.As(err, &noe) {
			t.Fatalf("event %s refused with %v, want moving or not owner (nothing else can happen here)", p, err)
		}
		if errors.Is(err, ErrShardMoving) {
			moving++
		}
		if stored[p] != 0 {
			t.Errorf("event %s refused (%v) but stored %d times", p, err, stored[p])
		}
	}
	for p := range acked {
		if stored[p] != 1 {
			t.Errorf("acknowledged event %s stored %d times", p, stored[p])
		}
	}
	return moving
}
