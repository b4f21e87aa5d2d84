package adminapi

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/replication"
	"github.com/purplerain/mesh-operator/node/topology"
)

// The admin API owns the replication verifier's trusted cluster keys (a
// rotation replaces them), and the node's followers trust exactly those
// keys to sign their owner's handshake: an owner signing with a key the
// verifier does not trust feeds the follower nothing, and once a rotation
// trusts that key, the follower replicates from it.
func TestFollowersTrustTheReplicationVerifiersKeys(t *testing.T) {
	gen := func() *identity.KeyPair {
		k, err := identity.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	op, cluster, next := gen(), gen(), gen()
	log := slog.New(slog.DiscardHandler)
	mem := &nodeconfig.Config{Storage: nodeconfig.Storage{Mode: "Memory", Fsync: "Never"}}

	owner, err := node.New(node.Options{Name: "a", ClusterKey: cluster, Logger: log, Config: mem})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = owner.Close() })
	srv, err := replication.NewServer(replication.ServerOptions{Source: owner.OwnerSource(), Logger: log,
		Verifier:   identity.NewVerifier([]ed25519.PublicKey{cluster.PublicKey()}),
		SessionKey: func() *identity.KeyPair { return next }, // already switched to a key b does not trust yet
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.27.160:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-served })
	topo := &topology.Topology{
		Cluster: "demo", Epoch: 1, LeaseMillis: 600_000, BaseShards: 1,
		Members: []topology.Member{
			{Name: "a", Role: topology.Active, Data: "127.0.27.160:1", Wire: ln.Addr().String()},
			{Name: "b", Role: topology.Standby, Data: "127.0.27.161:1", Wire: "127.0.27.161:2"},
		},
		Shards: []topology.Shard{{ID: 0, Owner: "a", Followers: []string{"b"}}},
	}
	if err := owner.ApplyTopology(topo); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Ingest(context.Background(), []dataapi.Event{{Payload: []byte(`{"n":1}`)}}); err != nil {
		t.Fatal(err)
	}

	b, err := node.New(node.Options{Name: "b", ClusterKey: cluster, Logger: log, Config: mem})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	repl := identity.NewVerifier([]ed25519.PublicKey{cluster.PublicKey()})
	if _, err := New(Options{Node: b, Verifier: identity.NewVerifier([]ed25519.PublicKey{op.PublicKey()}),
		ReplicationVerifier: repl, Registry: prometheus.NewRegistry(), Logger: log}); err != nil {
		t.Fatal(err)
	}
	if err := b.ApplyTopology(topo); err != nil {
		t.Fatal(err)
	}
	wait := func(what string, cond func(replication.FollowerStatus) bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			if st := b.FollowerStatuses(); len(st) == 1 && cond(st[0]) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %+v", what, b.FollowerStatuses())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	wait("refused at the handshake", func(s replication.FollowerStatus) bool {
		return s.LastErr != nil && strings.Contains(s.LastErr.Error(), "session")
	})
	if st := b.FollowerStatuses()[0]; st.Subscriptions != 0 || st.Next != 0 {
		t.Fatalf("the follower of an owner signing with an untrusted key subscribed: %+v", st)
	}

	// A rotation's trust step: both keys trusted.
	repl.SetTrusted([]ed25519.PublicKey{cluster.PublicKey(), next.PublicKey()})
	wait("replicating once the key is trusted", func(s replication.FollowerStatus) bool { return s.Connected && s.Next == 1 })
}
