package controllers

import (
	"context"
	"crypto/ed25519"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node"
	"github.com/purplerain/mesh-operator/node/adminapi"
	"github.com/purplerain/mesh-operator/node/adminclient"
	"github.com/purplerain/mesh-operator/node/topology"
)

// The removal of drained shards without an API server
// (go test -run 'TestAutoscale' ./controllers/), against a real node
// behind its admin API on a loopback address of the suite's network
// (MESH_TEST_NET, as kubelet_test.go).

func autoscaleTopology(epoch uint64, admin string, draining bool) *topology.Topology {
	return &topology.Topology{Cluster: "m", Epoch: epoch, LeaseMillis: 60_000, BaseShards: 1,
		Members: []topology.Member{{Name: "a", Role: topology.Active, Admin: admin}},
		Shards:  []topology.Shard{{ID: 0, Owner: "a"}, {ID: 1, Owner: "a", Draining: draining}}}
}

// An added shard the operator recorded as draining leaves the topology
// only once its owner says it drains too: an owner that missed the
// draining push still appends keyless events to the shard, and an empty
// log it reported a moment ago says nothing about them.
func TestAutoscaleRemovesADrainedShardOnlyOnceItsOwnerDrainsIt(t *testing.T) {
	op, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(node.Options{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	srv, err := adminapi.New(adminapi.Options{Node: n, Verifier: identity.NewVerifier([]ed25519.PublicKey{op.PublicKey()}), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv)
	ip := "127.0.1.9"
	if v := os.Getenv("MESH_TEST_NET"); v != "" {
		ip = v + ".9"
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	hs.Listener = l
	hs.Start()
	t.Cleanup(hs.Close)
	admin := strings.TrimPrefix(hs.URL, "http://")
	dial := adminclient.NewHTTPDialer(op, nil)
	ctx := context.Background()

	// The node holds epoch 1 (shard 1 takes events, its log is empty);
	// the operator recorded epoch 2, where shard 1 drains, and the push
	// missed the node.
	if err := n.ApplyTopology(autoscaleTopology(1, admin, false)); err != nil {
		t.Fatal(err)
	}
	recorded := autoscaleTopology(2, admin, true)
	reports, err := readShardReports(ctx, dial, recorded)
	if err != nil {
		t.Fatal(err)
	}
	if rep := reports[1]; !rep.empty || rep.draining {
		t.Fatalf("report of shard 1 at the node's epoch 1: %+v, want empty and not draining", rep)
	}
	if id, ok := drainedEmpty(recorded, reports); ok {
		t.Fatalf("shard %d would be removed while its owner still routes events to it", id)
	}

	// The owner applies the draining epoch: now its empty log is final.
	if err := n.ApplyTopology(recorded); err != nil {
		t.Fatal(err)
	}
	if reports, err = readShardReports(ctx, dial, recorded); err != nil {
		t.Fatal(err)
	}
	if id, ok := drainedEmpty(recorded, reports); !ok || id != 1 {
		t.Fatalf("drained, empty shard 1 not removable: %d %v (reports %+v)", id, ok, reports)
	}
}
