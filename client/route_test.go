package client

import (
	"fmt"
	"testing"

	"github.com/purplerain/mesh-operator/node/topology"
)

// Keyless events spread over the owners of routable shards only; keyed
// events go to their base shard's owner whatever was added or drains.
func TestRouteSkipsDrainingShardsAndKeepsKeysOnBaseShards(t *testing.T) {
	top := &topology.Topology{Epoch: 3, LeaseMillis: 1000, BaseShards: 2,
		Members: []topology.Member{{Name: "a", Role: topology.Active, Data: "a:1"}, {Name: "b", Role: topology.Active, Data: "b:1"}, {Name: "c", Role: topology.Active, Data: "c:1"}},
		Shards:  []topology.Shard{{ID: 0, Owner: "a"}, {ID: 1, Owner: "a"}, {ID: 2, Owner: "b"}, {ID: 3, Owner: "c", Draining: true}}}
	c := &Client{topo: top}
	var events []Event
	var pending []int
	for i := range 90 {
		events = append(events, Event{Payload: []byte("x")})
		pending = append(pending, i)
	}
	groups, err := c.route(events, pending)
	if err != nil {
		t.Fatal(err)
	}
	if len(groups["c:1"]) != 0 {
		t.Fatalf("%d keyless events went to c, which owns only a draining shard", len(groups["c:1"]))
	}
	// a owns two routable shards, b one.
	if len(groups["a:1"]) != 60 || len(groups["b:1"]) != 30 {
		t.Fatalf("keyless spread a=%d b=%d, want 60 and 30", len(groups["a:1"]), len(groups["b:1"]))
	}
	for i := range 200 {
		key := []byte(fmt.Sprintf("k%d", i))
		groups, err := c.route([]Event{{Key: key}}, []int{0})
		if err != nil {
			t.Fatal(err)
		}
		if len(groups["a:1"]) != 1 {
			t.Fatalf("key %s routed to %v, want a (owner of both base shards)", key, groups)
		}
	}
}
