package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/redex"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/topology"
)

// TestFollowerRefusesAnOwnerItDoesNotTrust: whoever answers on a shard
// owner's wire address can answer a lagged follower's resync, and the
// follower then drops every entry it holds (redex ResetTo). With
// TrustOwnersSignedBy (the runtime's replication trust, wired by
// adminapi.New), b follows only an owner whose handshake a trusted
// cluster key signs: an owner signing with another key (here one that has
// pruned past b, so it would resync b) gets nothing from b, and b's log
// keeps every entry. Trusting the key makes the same owner resync b.
func TestFollowerRefusesAnOwnerItDoesNotTrust(t *testing.T) {
	ctx := context.Background()
	cluster, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	impostor, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)

	// b's stored copy of shard 0: entries 0..9.
	dir := t.TempDir()
	held, err := redex.Open(redex.Options{Dir: filepath.Join(dir, "shard-0"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := held.Append(payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	want, err := held.Read(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := held.Close(); err != nil {
		t.Fatal(err)
	}

	// The owner a serves shard 0 pruned past seq 10, signing its
	// handshakes with a key b does not trust.
	owner, err := New(Options{Name: "a", ClusterKey: cluster, Logger: log, Config: &nodeconfig.Config{
		Storage:   nodeconfig.Storage{Mode: "Memory", Fsync: "Never"},
		Retention: nodeconfig.Retention{MaxEvents: 20},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { owner.Close() }) // after the replication server stops (a cleanup registered later)
	_, addr := serveReplication(t, owner, cluster, func() *identity.KeyPair { return impostor }, "127.0.27.150")
	topo := &topology.Topology{
		Cluster: "demo", Epoch: 1, LeaseMillis: 600_000, BaseShards: 1,
		Members: []topology.Member{
			{Name: "a", Role: topology.Active, Data: "127.0.27.150:1", Wire: addr},
			{Name: "b", Role: topology.Standby, Data: "127.0.27.151:1", Wire: "127.0.27.151:2"},
		},
		Shards: []topology.Shard{{ID: 0, Owner: "a", Followers: []string{"b"}}},
	}
	if err := owner.ApplyTopology(topo); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if _, err := owner.Ingest(ctx, []dataapi.Event{{Key: keyFor(topo, 0), Payload: payload(100 + i)}}); err != nil {
			t.Fatal(err)
		}
	}
	owner.sweepRetention(time.Now())
	if ol, _ := owner.Log(0); ol.FirstSeq() <= 10 {
		t.Fatalf("setup: the owner retains from %d, not past b's 10", ol.FirstSeq())
	}

	b, err := New(Options{Name: "b", ClusterKey: cluster, Logger: log, Config: &nodeconfig.Config{
		Storage: nodeconfig.Storage{Mode: "Disk", Dir: dir, Fsync: "Never"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var trusted = []ed25519.PublicKey{cluster.PublicKey()}
	trust := make(chan []ed25519.PublicKey, 1)
	trust <- trusted
	b.TrustOwnersSignedBy(func() []ed25519.PublicKey {
		keys := <-trust
		trust <- keys
		return keys
	})
	if err := b.ApplyTopology(topo); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := b.FollowerStatuses()
		if len(st) == 1 && st[0].LastErr != nil {
			if !strings.Contains(st[0].LastErr.Error(), "session") || st[0].Subscriptions != 0 || st[0].Resyncs != 0 {
				t.Fatalf("follower status %+v: want refused at the session handshake, never subscribed", st[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the follower of an untrusted owner reported nothing: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	fl, err := b.Log(0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := fl.Read(fl.FirstSeq(), int(fl.Len())+1)
	if err != nil || fl.FirstSeq() != 0 || len(got) != len(want) {
		t.Fatalf("b holds [%d, %d) (%v) after following an untrusted owner, want its 10 entries", fl.FirstSeq(), fl.NextSeq(), err)
	}
	for i := range want {
		if !bytes.Equal(got[i].Payload, want[i].Payload) {
			t.Fatalf("entry %d changed to %q", i, got[i].Payload)
		}
	}

	// Control: once the owner's key is trusted, the same owner resyncs b.
	<-trust
	trust <- append(trusted, impostor.PublicKey())
	ol, _ := owner.Log(0)
	for deadline = time.Now().Add(20 * time.Second); fl.FirstSeq() != ol.FirstSeq() || fl.NextSeq() != ol.NextSeq(); {
		if time.Now().After(deadline) {
			t.Fatalf("b did not resync from the trusted owner: holds [%d, %d), owner [%d, %d): %+v",
				fl.FirstSeq(), fl.NextSeq(), ol.FirstSeq(), ol.NextSeq(), b.FollowerStatuses())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
