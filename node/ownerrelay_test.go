package node

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/wire/wiretest"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/replication"
	"github.com/purplerain/mesh-operator/node/topology"
)

// TestFollowerGivesARelayWithItsOwnKeyNothing: a man in the middle who
// answers on the owner's wire address and ends the follower's session with
// its own key, relaying to the real owner, gets nothing from a node's
// follower: the follower refuses the handshake before it sends its
// replication token, so the relay learns no token and the follower appends
// nothing. The node sets RequireSignedOwner without being told which keys
// to trust (no TrustOwnersSignedBy): its own cluster key is enough. Control:
// trusting the relay's key makes the very same relay carry the stream, so
// the refusal is the trust check and not a broken relay.
func TestFollowerGivesARelayWithItsOwnKeyNothing(t *testing.T) {
	ctx := context.Background()
	cluster, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	relayKey, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	mem := &nodeconfig.Config{Storage: nodeconfig.Storage{Mode: "Memory", Fsync: "Never"}}

	owner, err := New(Options{Name: "a", ClusterKey: cluster, Logger: log, Config: mem})
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	srv, err := replication.NewServer(replication.ServerOptions{Source: owner.OwnerSource(),
		Verifier: identity.NewVerifier([]ed25519.PublicKey{cluster.PublicKey()}), HeartbeatInterval: 20 * time.Millisecond, Logger: log,
		SessionKey: owner.ClusterKey, RequireSealed: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.29.230:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() { srv.Close(); <-served }()

	rln, err := net.Listen("tcp", "127.0.29.231:0")
	if err != nil {
		t.Fatal(err)
	}
	relay := wiretest.StartRelay(rln, relayKey.Sign, relayKey.PublicKey(), ln.Addr().String(), replication.Subprotocol)
	defer relay.Close()

	// The topology the owner applies names its real address; the one b
	// gets names the relay's (a poisoned DNS name or a hijacked route
	// does that in a real cluster).
	topo := func(ownerWire string) *topology.Topology {
		return &topology.Topology{
			Cluster: "demo", Epoch: 1, LeaseMillis: 600_000, BaseShards: 1,
			Members: []topology.Member{
				{Name: "a", Role: topology.Active, Data: "127.0.29.230:1", Wire: ownerWire},
				{Name: "b", Role: topology.Standby, Data: "127.0.29.232:1", Wire: "127.0.29.232:2"},
			},
			Shards: []topology.Shard{{ID: 0, Owner: "a", Followers: []string{"b"}}},
		}
	}
	if err := owner.ApplyTopology(topo(ln.Addr().String())); err != nil {
		t.Fatal(err)
	}
	relayed := topo(rln.Addr().String())
	for i := range 20 {
		if _, err := owner.Ingest(ctx, []dataapi.Event{{Key: keyFor(relayed, 0), Payload: payload(i)}}); err != nil {
			t.Fatal(err)
		}
	}

	b, err := New(Options{Name: "b", ClusterKey: cluster, Logger: log, Config: mem})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.ApplyTopology(relayed); err != nil {
		t.Fatal(err)
	}
	var refusals int
	for deadline := time.Now().Add(20 * time.Second); refusals < 3; {
		st := b.FollowerStatuses()
		if len(st) == 1 && st[0].LastErr != nil {
			if !strings.Contains(st[0].LastErr.Error(), "not trusted") || st[0].Subscriptions != 0 {
				t.Fatalf("follower status %+v: want refused at the session handshake (untrusted key), never subscribed", st[0])
			}
			refusals++ // the follower retries: each retry is refused too
		}
		if time.Now().After(deadline) {
			t.Fatalf("the follower behind a relay reported no refusal: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := relay.FromClient(); n != 0 {
		t.Fatalf("the relay got %d plaintext bytes from the follower (its token), want none", n)
	}
	if fl, err := b.Log(0); err != nil || fl.NextSeq() != 0 {
		t.Fatalf("b appended through the relay: log next %d (%v)", fl.NextSeq(), err)
	}

	// Control: the same relay, trusted, carries the stream.
	b.TrustOwnersSignedBy(func() []ed25519.PublicKey { return []ed25519.PublicKey{relayKey.PublicKey()} })
	fl, err := b.Log(0)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); fl.NextSeq() != 20; {
		if time.Now().After(deadline) {
			t.Fatalf("b did not replicate through a trusted relay: log next %d, %+v", fl.NextSeq(), b.FollowerStatuses())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if relay.FromClient() == 0 {
		t.Fatal("the trusted relay carried the stream but counted no bytes from the follower")
	}
}
