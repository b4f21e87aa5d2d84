package migration_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/compute/daemons"
	"github.com/purplerain/mesh-operator/engine/compute/migration"
	"github.com/purplerain/mesh-operator/engine/compute/migration/memnet"
)

// plan injects daemon-level faults on one node. Each fault fires once.
type plan struct {
	mu           sync.Mutex
	failSnapshot bool
	failRestore  bool
	failSeq      map[uint64]bool // fail once
	stuck        map[uint64]bool // fail every time
	calls        []uint64        // Process calls, in order, including failed ones
}

func (p *plan) takeSnapshotFault() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.failSnapshot
	p.failSnapshot = false
	return f
}

func (p *plan) takeRestoreFault() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.failRestore
	p.failRestore = false
	return f
}

func (p *plan) process(seq uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, seq)
	if p.stuck[seq] {
		return true
	}
	if p.failSeq[seq] {
		delete(p.failSeq, seq)
		return true
	}
	return false
}

func (p *plan) Calls() []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]uint64(nil), p.calls...)
}

// faulty wraps a daemon with a node's fault plan.
type faulty struct {
	compute.MeshDaemon
	p *plan
}

var errInjected = errors.New("injected fault")

func (f *faulty) Process(ev compute.Event) ([][]byte, error) {
	if f.p.process(ev.Seq) {
		return nil, errInjected
	}
	return f.MeshDaemon.Process(ev)
}

func (f *faulty) Snapshot() ([]byte, error) {
	if f.p.takeSnapshotFault() {
		return nil, errInjected
	}
	return f.MeshDaemon.Snapshot()
}

func (f *faulty) Restore(b []byte) error {
	if f.p.takeRestoreFault() {
		return errInjected
	}
	return f.MeshDaemon.Restore(b)
}

// chain is an order-sensitive daemon: its state is a hash chain over every
// (seq, payload) it applied, so any lost, duplicated or reordered event
// changes it.
type chain struct {
	h [32]byte
	n uint64
}

func newChain(string, []byte) (compute.MeshDaemon, error) { return &chain{}, nil }

func (c *chain) Name() string   { return "chain" }
func (c *chain) Stateful() bool { return true }
func (c *chain) Process(ev compute.Event) ([][]byte, error) {
	s := sha256.New()
	s.Write(c.h[:])
	s.Write(binary.LittleEndian.AppendUint64(nil, ev.Seq))
	s.Write(ev.Payload)
	s.Sum(c.h[:0])
	c.n++
	return nil, nil
}
func (c *chain) Snapshot() ([]byte, error) {
	return binary.LittleEndian.AppendUint64(append([]byte(nil), c.h[:]...), c.n), nil
}
func (c *chain) Restore(b []byte) error {
	if len(b) != 40 {
		return fmt.Errorf("chain: bad state of %d bytes", len(b))
	}
	copy(c.h[:], b)
	c.n = binary.LittleEndian.Uint64(b[32:])
	return nil
}

// kinds builds a registry with the built-ins and "chain", every daemon
// wrapped with p.
func kinds(t testing.TB, p *plan) *compute.Kinds {
	base := daemons.Builtins()
	if err := base.Register("chain", newChain); err != nil {
		t.Fatal(err)
	}
	k := compute.NewKinds()
	for _, kind := range base.List() {
		kind := kind
		if err := k.Register(kind, func(name string, cfg []byte) (compute.MeshDaemon, error) {
			d, err := base.New(kind, name, cfg)
			if err != nil {
				return nil, err
			}
			return &faulty{MeshDaemon: d, p: p}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

type node struct {
	id       migration.NodeID
	hosts    *compute.Hosts
	kinds    *compute.Kinds
	target   *migration.Target
	migrator *migration.Migrator
	plan     *plan
}

type cluster struct {
	net   *memnet.Network
	nodes map[migration.NodeID]*node
}

func newCluster(t testing.TB, cfg migration.Config, ids ...migration.NodeID) *cluster {
	c := &cluster{net: memnet.New(), nodes: make(map[migration.NodeID]*node)}
	if cfg.Backoff == nil {
		cfg.Backoff = func(int) time.Duration { return 0 }
	}
	for _, id := range ids {
		p := &plan{failSeq: map[uint64]bool{}}
		n := &node{id: id, hosts: compute.NewHosts(), kinds: kinds(t, p), plan: p}
		n.target = migration.NewTarget(n.kinds, n.hosts, compute.HostConfig{})
		n.target.SetReady(true)
		n.migrator = migration.NewMigrator(id, n.hosts, c.net.Transport(id), cfg)
		c.net.Register(id, &migration.Node{Target: n.target, Migrator: n.migrator})
		c.nodes[id] = n
	}
	return c
}

// spawn starts daemon id of kind on node n.
func (c *cluster) spawn(t testing.TB, n migration.NodeID, id, kind string, config []byte) *compute.Host {
	nd := c.nodes[n]
	d, err := nd.kinds.New(kind, id, config)
	if err != nil {
		t.Fatal(err)
	}
	h := compute.NewHost(id, kind, config, d, compute.CursorAt(0), compute.HostConfig{})
	if err := nd.hosts.Add(h); err != nil {
		t.Fatal(err)
	}
	return h
}

// owners lists the nodes hosting daemon id.
func (c *cluster) owners(id string) []migration.NodeID {
	var out []migration.NodeID
	for nid, n := range c.nodes {
		if _, err := n.hosts.Get(id); err == nil {
			out = append(out, nid)
		}
	}
	return out
}

// router delivers events to whichever node is authoritative, following
// MovedError and waiting out a cutover fence, like the node's ingest path.
type router struct {
	c   *cluster
	at  migration.NodeID
	mu  sync.Mutex
	err error
}

func (r *router) deliver(ctx context.Context, id string, ev compute.Event) error {
	for {
		r.mu.Lock()
		at := r.at
		r.mu.Unlock()
		_, err := r.c.nodes[at].hosts.Deliver(id, ev)
		var moved *compute.MovedError
		var pe *compute.ProcessError
		switch {
		case err == nil:
			return nil
		case errors.Is(err, compute.ErrFenced), errors.As(err, &pe):
			if ctx.Err() != nil {
				return ctx.Err()
			}
			runtime.Gosched()
		case errors.As(err, &moved):
			r.mu.Lock()
			r.at = migration.NodeID(moved.Node)
			r.mu.Unlock()
		default:
			return err
		}
	}
}

func payload(i int, rnd interface{ Intn(int) int }) []byte {
	return []byte(fmt.Sprintf(`{"key":"k%d","n":%d}`, rnd.Intn(8), i))
}

// reference runs the same events through a never-migrated daemon.
func reference(t testing.TB, kind string, config []byte, evs []compute.Event) []byte {
	d, err := kinds(t, &plan{failSeq: map[uint64]bool{}}).New(kind, "ref", config)
	if err != nil {
		t.Fatal(err)
	}
	h := compute.NewHost("ref", kind, config, d, compute.CursorAt(0), compute.HostConfig{})
	for _, ev := range evs {
		if _, err := h.Deliver(ev); err != nil {
			t.Fatal(err)
		}
	}
	s, err := h.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return s.State
}

func stateOf(t testing.TB, c *cluster, id string) ([]byte, compute.Cursor) {
	t.Helper()
	owners := c.owners(id)
	if len(owners) != 1 {
		t.Fatalf("daemon %q hosted on %v, want exactly one node", id, owners)
	}
	h, _ := c.nodes[owners[0]].hosts.Get(id)
	s, err := h.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return s.State, s.Cursor
}
