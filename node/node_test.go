package node

import (
	"errors"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/node/topology"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func twoNodes(epoch uint64) *topology.Topology {
	return &topology.Topology{
		Cluster: "demo", Epoch: epoch, LeaseMillis: 2000, BaseShards: 2,
		Members: []topology.Member{{Name: "a", Role: topology.Active, Data: "a:9441"}, {Name: "b", Role: topology.Active, Data: "b:9441"}},
		Shards:  []topology.Shard{{ID: 0, Owner: "a"}, {ID: 1, Owner: "b"}},
	}
}

func newNode(t *testing.T, name string) (*Node, *fakeClock) {
	t.Helper()
	clock := &fakeClock{t: time.Unix(1000, 0)}
	n, err := New(Options{Name: name, Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return n, clock
}

func TestOlderEpochIsRefusedAndChangesNothing(t *testing.T) {
	n, _ := newNode(t, "a")
	if err := n.ApplyTopology(twoNodes(5)); err != nil {
		t.Fatal(err)
	}
	older := twoNodes(4)
	older.Shards[0].Owner = "b"
	if err := n.ApplyTopology(older); !errors.Is(err, topology.ErrStaleEpoch) {
		t.Fatalf("want ErrStaleEpoch, got %v", err)
	}
	if n.Topology().Epoch != 5 || n.CheckWritable(0) != nil {
		t.Fatal("a refused topology changed the node's state")
	}
}

func TestOwnerStopsAcceptingWritesWhenItsLeaseExpires(t *testing.T) {
	n, clock := newNode(t, "a")
	if err := n.CheckWritable(0); !errors.Is(err, ErrNoTopology) {
		t.Fatalf("before any topology: want ErrNoTopology, got %v", err)
	}
	if err := n.ApplyTopology(twoNodes(1)); err != nil {
		t.Fatal(err)
	}
	clock.advance(1999 * time.Millisecond)
	if err := n.CheckWritable(0); err != nil {
		t.Fatalf("inside the lease: %v", err)
	}
	clock.advance(time.Millisecond)
	if err := n.CheckWritable(0); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("at lease end: want ErrLeaseExpired, got %v", err)
	}
	if err := n.Ready(); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("an owner with an expired lease must not be ready, got %v", err)
	}
	// A renewal at the same epoch restores writes.
	if err := n.ApplyTopology(twoNodes(1)); err != nil {
		t.Fatal(err)
	}
	if err := n.CheckWritable(0); err != nil {
		t.Fatalf("after renewal: %v", err)
	}
}

func TestWriteToAnotherOwnersShardNamesTheOwner(t *testing.T) {
	n, _ := newNode(t, "a")
	if err := n.ApplyTopology(twoNodes(1)); err != nil {
		t.Fatal(err)
	}
	var noe *NotOwnerError
	if err := n.CheckWritable(1); !errors.As(err, &noe) || noe.Owner != "b" || noe.Data != "b:9441" {
		t.Fatalf("want NotOwnerError naming b, got %v", err)
	}
	if err := n.CheckWritable(9); !errors.As(err, &noe) || noe.Owner != "" {
		t.Fatalf("unknown shard: want NotOwnerError without owner, got %v", err)
	}
}

func TestInvalidTopologyIsRefused(t *testing.T) {
	n, _ := newNode(t, "a")
	bad := twoNodes(1)
	bad.Shards[1].Owner = "nobody"
	if err := n.ApplyTopology(bad); err == nil {
		t.Fatal("invalid topology accepted")
	}
	if n.Topology() != nil {
		t.Fatal("invalid topology was stored")
	}
}
