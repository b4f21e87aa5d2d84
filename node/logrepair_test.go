package node

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/redex"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/dataapi"
)

// TestCorruptLogStopsTheNodeUnlessRepairIsAskedFor writes 40 events to a
// Disk-mode node, flips a byte in the middle of the shard's segment (intact
// records follow it, so it is corruption, not a torn write), and checks
// that the node refuses to start naming storage.repairCorruptLogs, and that
// with the option it starts with exactly the records before the damage.
func TestCorruptLogStopsTheNodeUnlessRepairIsAskedFor(t *testing.T) {
	dir := t.TempDir()
	cfg := func(repair bool) *nodeconfig.Config {
		return &nodeconfig.Config{Storage: nodeconfig.Storage{Mode: "Disk", Dir: dir, Fsync: "Never", RepairCorruptLogs: repair}}
	}
	n, err := New(Options{Name: "a", Now: (&fakeClock{t: time.Unix(1000, 0)}).now, Config: cfg(false)})
	if err != nil {
		t.Fatal(err)
	}
	topo := shardTopology(1, "a")
	var sent [][]byte
	for i := range 40 {
		p := payload(i)
		if _, err := n.Ingest(context.Background(), []dataapi.Event{{Key: keyFor(topo, 0), Payload: p}}); err != nil {
			if errors.Is(err, ErrNoTopology) {
				if err := n.ApplyTopology(topo); err != nil {
					t.Fatal(err)
				}
				_, err = n.Ingest(context.Background(), []dataapi.Event{{Key: keyFor(topo, 0), Payload: p}})
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		sent = append(sent, p)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "shard-0", "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("segments %v, want one", segs)
	}
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x20
	if err := os.WriteFile(segs[0], b, 0o644); err != nil {
		t.Fatal(err)
	}

	_, err = New(Options{Name: "a", Config: cfg(false)})
	if !errors.Is(err, redex.ErrCorrupt) || !strings.Contains(err.Error(), "storage.repairCorruptLogs") {
		t.Fatalf("start over a corrupt log: %v, want ErrCorrupt naming storage.repairCorruptLogs", err)
	}
	if after, _ := os.ReadFile(segs[0]); !bytes.Equal(after, b) {
		t.Fatal("a refused start changed the segment")
	}

	n, err = New(Options{Name: "a", Now: (&fakeClock{t: time.Unix(1000, 0)}).now, Config: cfg(true)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	l, err := n.Log(0)
	if err != nil {
		t.Fatal(err)
	}
	kept := l.NextSeq()
	if kept == 0 || kept >= 40 {
		t.Fatalf("repaired log keeps %d records, want some but not all of 40", kept)
	}
	es, err := l.Read(0, 40)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range es {
		if !bytes.Equal(e.Payload, sent[i]) {
			t.Fatalf("kept record %d = %q, want %q", i, e.Payload, sent[i])
		}
	}
	// The node writes on after the cut.
	if err := n.ApplyTopology(topo); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Ingest(context.Background(), []dataapi.Event{{Key: keyFor(topo, 0), Payload: []byte("after")}}); err != nil {
		t.Fatal(err)
	}
	if e, err := l.Get(kept); err != nil || string(e.Payload) != "after" {
		t.Fatalf("seq %d after repair: %q, %v; want the new event", kept, e.Payload, err)
	}
}
