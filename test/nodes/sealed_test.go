package nodes

import (
	"context"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/client"
	"github.com/purplerain/mesh-operator/node/topology"
)

// TestSealedBinaryIngestThroughHandoff drives the whole sealed path with
// real processes: a binary-only SDK client (topology, ingest and poll over
// sealed wire sessions, no HTTP) writes while a shard is handed off (the
// new owner follows the old one over a sealed replication stream, as the
// standby follows every owner); afterwards every acknowledged event is
// present, at most once per send (the SDK's contract: only a resend after
// an unknown outcome, such as a lease running out during the append, may
// store an event twice), in per-shard order, and the daemons equal a
// reference fold. The client's OnBinarySend hook counts binary sends, as
// the HTTP tests' round tripper counts theirs. A fence or cutover refusal
// appends nothing (node.TestIngestRefusedForAFenceOrMoveAppendedNothing),
// so under ackPolicy Leader a handoff alone makes no duplicate; under
// Standby an owner may still append an event and then refuse it (its
// follower's stream restarting), which the SDK rightly resends
// (TestLargeEventsOverBinaryAndReplication covers Standby).
func TestSealedBinaryIngestThroughHandoff(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 102, "Leader")
	c.bootstrap()
	var wires []string
	for _, m := range c.members {
		wires = append(wires, m.Wire)
	}
	cl, err := client.New(ctx, client.Options{WireAddresses: wires, Transport: client.TransportBinary, Credentials: c.creds,
		RetryBase: 5 * time.Millisecond, RetryMax: 100 * time.Millisecond, OnBinarySend: c.attempts.Count})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	in := ingest(cl, 4)
	defer in.halt()
	time.Sleep(500 * time.Millisecond)

	shard := c.ownedBy("a0")[0]
	got, err := c.driver.Handoff(ctx, c.recorded(), topology.Move{Shard: shard, From: "a0", To: "a1"})
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := got.Shard(shard); s.Owner != "a1" || s.Fenced {
		t.Fatalf("shard %d after handoff: %+v", shard, s)
	}
	in.mark()
	waitAcks(t, in, []uint16{shard}, 10*time.Second)
	in.halt()
	if in.count() == 0 {
		t.Fatal("nothing was acknowledged")
	}
	c.verify(ctx, cl, in)
}
