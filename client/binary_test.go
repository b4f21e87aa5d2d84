package client

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/rules"
	"github.com/purplerain/mesh-operator/node"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/topology"
	"github.com/purplerain/mesh-operator/node/wireapi"
)

// binCluster is two real nodes, each behind its HTTP data API (for the
// topology) and its binary data API on a loopback wire port 127.0.6.x.
type binCluster struct {
	nodes map[string]*node.Node
	data  map[string]string
	wire  map[string]string
	srvs  map[string]*wireapi.Server
	done  map[string]chan error
}

func newBinCluster(t *testing.T) *binCluster {
	t.Helper()
	c := &binCluster{nodes: map[string]*node.Node{}, data: map[string]string{}, wire: map[string]string{}, srvs: map[string]*wireapi.Server{}, done: map[string]chan error{}}
	for i, name := range []string{"a", "b"} {
		c.nodes[name], c.data[name] = startNode(t, name)
		c.startWire(t, name, fmt.Sprintf("127.0.6.%d:0", 10+i))
		t.Cleanup(func() { c.stopWire(t, name) })
	}
	return c
}

func (c *binCluster) startWire(t *testing.T, name, addr string) {
	t.Helper()
	s, err := wireapi.NewServer(wireapi.ServerOptions{Backend: c.nodes[name]})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.wire[name], c.srvs[name], c.done[name] = ln.Addr().String(), s, make(chan error, 1)
	go func(done chan error) { done <- s.Serve(ln) }(c.done[name])
}

func (c *binCluster) stopWire(t *testing.T, name string) {
	if s := c.srvs[name]; s != nil {
		_ = s.Close()
		if err := <-c.done[name]; !errors.Is(err, wireapi.ErrServerClosed) {
			t.Errorf("wire server %s: %v", name, err)
		}
		delete(c.srvs, name)
	}
}

func (c *binCluster) push(t *testing.T, epoch uint64, owner0 string) {
	t.Helper()
	other := map[string]string{"a": "b", "b": "a"}[owner0]
	top := &topology.Topology{
		Cluster: "c", Epoch: epoch, LeaseMillis: 60_000, BaseShards: 2,
		Members: []topology.Member{
			{Name: "a", Role: topology.Active, Data: c.data["a"], Wire: c.wire["a"]},
			{Name: "b", Role: topology.Active, Data: c.data["b"], Wire: c.wire["b"]},
		},
		Shards: []topology.Shard{{ID: 0, Owner: owner0}, {ID: 1, Owner: other}},
	}
	applyTopology(t, c.nodes, top)
}

func newBinClient(t *testing.T, ctx context.Context, addr string) *Client {
	t.Helper()
	cl, err := New(ctx, Options{Addresses: []string{addr}, RetryBase: time.Millisecond, Transport: TransportBinary})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

func TestBinaryKeyedEventsGoToTheirOwnerAndFollowAMove(t *testing.T) {
	c := newBinCluster(t)
	c.push(t, 1, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := newBinClient(t, ctx, c.data["b"])
	var events []Event
	for _, k := range keysFor(0, 5) {
		events = append(events, Event{Key: k, Payload: append([]byte("before-"), k...)})
	}
	for _, k := range keysFor(1, 5) {
		events = append(events, Event{Key: k, Payload: append([]byte("other-"), k...)})
	}
	acks, err := cl.Ingest(ctx, events...)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range acks {
		if want := uint16(i / 5); a.Shard != want {
			t.Fatalf("event %d acknowledged on shard %d, want %d", i, a.Shard, want)
		}
	}

	// The shard moves to b; a refuses with not_owner over the wire, the
	// client refreshes and retries at b.
	ingestAfterMoveToB(t, ctx, cl, c.nodes, c.push)
}

func TestBinaryPollerReadsEveryOwnerOnceWithOneCursor(t *testing.T) {
	c := newBinCluster(t)
	c.push(t, 1, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := newBinClient(t, ctx, c.data["a"])
	pollEveryEventOnce(t, ctx, cl)
}

func TestBinaryRuleRefusalIsNotRetried(t *testing.T) {
	c := newBinCluster(t)
	c.push(t, 1, "a")
	set, err := rules.Parse([]byte(`[{"name":"small","require":{"field":"n","op":"lt","value":10}}]`))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		n.SetRules(set)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := newBinClient(t, ctx, c.data["a"])
	_, err = cl.Ingest(ctx, Event{Key: keysFor(0, 1)[0], Payload: []byte(`{"n":11}`)})
	var re *RuleRejectedError
	var ce *Error
	if !errors.As(err, &re) || re.Rule != "small" || !errors.As(err, &ce) || ce.Status != http.StatusUnprocessableEntity || ctx.Err() != nil {
		t.Fatalf("want the rule refusal at once, got %v", err)
	}
}

func TestBinaryBrokenConnectionIsRedialedAndRetried(t *testing.T) {
	c := newBinCluster(t)
	c.push(t, 1, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := newBinClient(t, ctx, c.data["a"])
	key := keysFor(0, 1)[0]
	if _, err := cl.Ingest(ctx, Event{Key: key, Payload: []byte("one")}); err != nil {
		t.Fatal(err)
	}
	// a's wire server goes away and comes back on the same address: the
	// client's connection is dead, the next ingest redials.
	addr := c.wire["a"]
	c.stopWire(t, "a")
	got := make(chan error, 1)
	go func() {
		_, err := cl.Ingest(ctx, Event{Key: key, Payload: []byte("two")})
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.startWire(t, "a", addr)
	if err := <-got; err != nil {
		t.Fatalf("ingest across a wire server restart: %v", err)
	}
	l, err := c.nodes["a"].Log(0)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := l.Read(0, 10)
	if err != nil || len(entries) != 2 || string(entries[1].Payload) != "two" {
		t.Fatalf("shard 0 holds %d entries (%v), want one and two", len(entries), err)
	}
}

func TestBinaryWireTokenIsPresentedOnEveryConnection(t *testing.T) {
	c := newBinCluster(t)
	op, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	// a's wire port now requires a token signed by op.
	addr := c.wire["a"]
	c.stopWire(t, "a")
	s, err := wireapi.NewServer(wireapi.ServerOptions{Backend: c.nodes["a"], Verifier: identity.NewVerifier([]ed25519.PublicKey{op.PublicKey()})})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.srvs["a"], c.done["a"] = s, make(chan error, 1)
	go func(done chan error) { done <- s.Serve(ln) }(c.done["a"])
	c.push(t, 1, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key := keysFor(0, 1)[0]

	without := newBinClient(t, ctx, c.data["a"])
	_, err = without.Ingest(ctx, Event{Key: key, Payload: []byte("x")})
	var ce *Error
	if !errors.As(err, &ce) || ce.Code != dataapi.CodeRejected || ctx.Err() != nil {
		t.Fatalf("ingest without a token: %v, want rejected at once", err)
	}
	tok, err := op.Issue(identity.Grant{Subject: op.PublicKey(), Scope: identity.ScopeIngest, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	with, err := New(ctx, Options{Addresses: []string{c.data["a"]}, Transport: TransportBinary, WireToken: tok.Encode()})
	if err != nil {
		t.Fatal(err)
	}
	defer with.Close()
	if _, err := with.Ingest(ctx, Event{Key: key, Payload: []byte("x")}); err != nil {
		t.Fatalf("ingest with a token: %v", err)
	}
}
