package client

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/topology"
)

// A poller that learnt the topology before autoscaling added a shard on a
// member that owned nothing reads that shard too: polls keep succeeding
// against the old topology, so the poller must refresh it once it finds
// every owner it knows caught up.
func TestPollerReadsAShardAddedOnAMemberItDidNotPoll(t *testing.T) {
	c := newCluster(t)
	members := []topology.Member{{Name: "a", Role: topology.Active, Data: c.addrs["a"]}, {Name: "b", Role: topology.Active, Data: c.addrs["b"]}}
	push := func(top *topology.Topology) {
		t.Helper()
		for name, n := range c.nodes {
			if err := n.ApplyTopology(top); err != nil {
				t.Fatalf("push to %s: %v", name, err)
			}
		}
	}
	// Epoch 1: a owns both base shards, b owns nothing.
	push(&topology.Topology{Cluster: "c", Epoch: 1, LeaseMillis: 60_000, BaseShards: 2, Members: members,
		Shards: []topology.Shard{{ID: 0, Owner: "a"}, {ID: 1, Owner: "a"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A topology is always older than a nanosecond: no waiting for it.
	cl, err := New(ctx, Options{Addresses: []string{c.addrs["a"]}, RetryBase: time.Millisecond, TopologyMaxAge: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Ingest(ctx, Event{Key: []byte("k"), Payload: []byte("base")}); err != nil {
		t.Fatal(err)
	}
	p, err := cl.NewPoller("")
	if err != nil {
		t.Fatal(err)
	}

	// Epoch 2: shard 2 added on b, which takes keyless events on it.
	push(&topology.Topology{Cluster: "c", Epoch: 2, LeaseMillis: 60_000, BaseShards: 2, Members: members,
		Shards: []topology.Shard{{ID: 0, Owner: "a"}, {ID: 1, Owner: "a"}, {ID: 2, Owner: "b"}}})
	const added = 20
	for i := range added {
		acks, err := c.nodes["b"].Ingest(ctx, []dataapi.Event{{Payload: fmt.Appendf(nil, "added-%d", i)}})
		if err != nil || acks[0].Shard != 2 {
			t.Fatalf("ingest on b: %v %v", acks, err)
		}
	}

	read := map[uint16]int{}
	for range 10 {
		page, err := p.Poll(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Events {
			read[e.Shard]++
		}
		if len(page.Events) == 0 && !page.HasMore {
			break
		}
	}
	if read[2] != added || read[0]+read[1] != 1 {
		t.Fatalf("read %v, want the base event and all %d events of added shard 2", read, added)
	}
}
