package adminclient

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node"
	"github.com/purplerain/mesh-operator/node/adminapi"
	"github.com/purplerain/mesh-operator/node/topology"
)

func serve(t *testing.T, trusted ed25519.PublicKey) string {
	t.Helper()
	n, err := node.New(node.Options{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	s, err := adminapi.New(adminapi.Options{Node: n, Verifier: identity.NewVerifier([]ed25519.PublicKey{trusted}), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func topo(epoch uint64) *topology.Topology {
	return &topology.Topology{Cluster: "c", Epoch: epoch, LeaseMillis: 5000, BaseShards: 1,
		Members: []topology.Member{{Name: "a", Role: topology.Active}}, Shards: []topology.Shard{{ID: 0, Owner: "a"}}}
}

func TestOperatorKeyDrivesTheNode(t *testing.T) {
	op, _ := identity.Generate(nil)
	c := NewHTTPDialer(op, nil)(serve(t, op.PublicKey()))
	ctx := context.Background()
	if err := c.PutTopology(ctx, topo(4)); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Epoch != 4 || !st.Ready {
		t.Fatalf("status %+v, %v", st, err)
	}
	if err := c.PutTopology(ctx, topo(3)); !errors.Is(err, topology.ErrStaleEpoch) {
		t.Fatalf("older epoch: want ErrStaleEpoch, got %v", err)
	}
}

func TestAnotherKeyIsRefused(t *testing.T) {
	op, _ := identity.Generate(nil)
	impostor, _ := identity.Generate(nil)
	c := NewHTTPDialer(impostor, nil)(serve(t, op.PublicKey()))
	var se *StatusError
	if err := c.PutTopology(context.Background(), topo(1)); !errors.As(err, &se) || se.Status != 401 {
		t.Fatalf("want 401, got %v", err)
	}
}
