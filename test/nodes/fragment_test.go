package nodes

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/client"
	"github.com/purplerain/mesh-operator/node/wireapi"
)

// TestLargeEventsOverBinaryAndReplication ingests events around and far
// past the wire packet size through the SDK's binary transport under
// ackPolicy Standby, so every acknowledged event was fragmented twice: on
// the binary data API and on replication to the standby. Each reads back
// whole, exactly once.
func TestLargeEventsOverBinaryAndReplication(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newCluster(t, 101, "Standby")
	c.bootstrap()
	var addrs []string
	for _, m := range c.members {
		addrs = append(addrs, m.Data)
	}
	cl, err := client.New(ctx, client.Options{Addresses: addrs, Transport: client.TransportBinary, Credentials: c.creds})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	exact := wireapi.MaxFrame - 2 - 1 // keyLen u16 and a 1-byte key
	sizes := []int{1, exact, exact + 1, 1<<20 + 7}
	sent := map[string][]byte{}
	for i, n := range sizes {
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(j*7 + i)
		}
		copy(p, []byte{byte('A' + i)})
		if _, err := cl.Ingest(ctx, client.Event{Key: []byte{byte('k' + i)}, Payload: p}); err != nil {
			t.Fatalf("event of %d bytes: %v", n, err)
		}
		sent[string(p[:1])] = p
	}
	got := map[string]int{}
	pl, err := cl.NewPoller("")
	if err != nil {
		t.Fatal(err)
	}
	for {
		page, err := pl.Poll(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range page.Events {
			id := string(ev.Payload[:1])
			if !bytes.Equal(ev.Payload, sent[id]) {
				t.Fatalf("event %q came back as %d bytes, sent %d", id, len(ev.Payload), len(sent[id]))
			}
			got[id]++
		}
		if !page.HasMore {
			break
		}
	}
	for id := range sent {
		if got[id] != 1 {
			t.Fatalf("event %q read %d times", id, got[id])
		}
	}
}
