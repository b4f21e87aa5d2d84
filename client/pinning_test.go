package client

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/wire"
	"github.com/purplerain/mesh-operator/node/wireapi"
)

// sealedSigner restarts name's wire server the way the node runtime runs
// it: sealed sessions required, handshakes signed with key, data tokens
// checked against op.
func (c *binCluster) sealedSigner(t *testing.T, name string, key, op *identity.KeyPair) {
	t.Helper()
	addr := c.wire[name]
	c.stopWire(t, name)
	s, err := wireapi.NewServer(wireapi.ServerOptions{Backend: c.nodes[name], RequireSealed: true,
		SessionKey: func() *identity.KeyPair { return key },
		Verifier:   identity.NewVerifier([]ed25519.PublicKey{op.PublicKey()})})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.srvs[name], c.done[name] = s, make(chan error, 1)
	go func(done chan error) { done <- s.Serve(ln) }(c.done[name])
}

// TestCredentialsPinTheNodeKeysTheyName: a binary client given data
// credentials that name server keys (the data Secret's server-keys entry)
// accepts a node signing with one of them, and refuses one signing with
// another key (a man in the middle, or a node of another cluster) at the
// handshake, before it sends its token or an event. Explicit ServerKeys
// win over the credentials'; credentials naming none (a Secret made by an
// older operator) pin nothing.
func TestCredentialsPinTheNodeKeysTheyName(t *testing.T) {
	c := newBinCluster(t)
	op, cluster, impostor := mustGenerate(t), mustGenerate(t), mustGenerate(t)
	c.sealedSigner(t, "a", cluster, op)
	c.sealedSigner(t, "b", cluster, op)
	c.push(t, 1, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	creds := func(keys ...ed25519.PublicKey) *identity.DataCredentials {
		dc, err := identity.NewDataCredentials(op, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		dc.ServerKeys = keys
		return dc
	}
	dial := func(o Options) (*Client, error) {
		o.WireAddresses, o.Transport, o.RetryBase = []string{c.wire["a"]}, TransportBinary, time.Millisecond
		cl, err := New(ctx, o)
		if err == nil {
			t.Cleanup(func() { _ = cl.Close() })
		}
		return cl, err
	}
	ingest := func(cl *Client) error {
		for _, k := range keysFor(0, 1) {
			if _, err := cl.Ingest(ctx, Event{Key: k, Payload: []byte("pinned")}); err != nil {
				return err
			}
		}
		return nil
	}

	// The credentials name the cluster key (next to another one, as
	// during a rotation): nodes signing with it are accepted.
	pinned, err := dial(Options{Credentials: creds(impostor2(t), cluster.PublicKey())})
	if err != nil {
		t.Fatalf("client pinning the nodes' key: %v", err)
	}
	if len(pinned.opts.ServerKeys) != 2 {
		t.Fatalf("the client pins %d keys, want the credentials' 2", len(pinned.opts.ServerKeys))
	}
	if err := ingest(pinned); err != nil {
		t.Fatalf("ingest to nodes signing with a pinned key: %v", err)
	}

	// Node a now signs with a key the credentials do not name: a new
	// client refuses it at the handshake.
	c.sealedSigner(t, "a", impostor, op)
	if _, err := dial(Options{Credentials: creds(cluster.PublicKey())}); !errors.Is(err, wire.ErrHandshake) {
		t.Fatalf("client whose credentials pin the cluster key, node signing with another: %v, want a refused handshake", err)
	}
	// ... and a client that learnt the topology from b (which still signs
	// with the cluster key) refuses a's wire port when it writes there.
	viaB, err := New(ctx, Options{WireAddresses: []string{c.wire["b"]}, Transport: TransportBinary, RetryBase: time.Millisecond,
		Credentials: creds(cluster.PublicKey())})
	if err != nil {
		t.Fatalf("client via b: %v", err)
	}
	defer viaB.Close()
	short, stop := context.WithTimeout(ctx, time.Second)
	_, err = viaB.Ingest(short, Event{Key: keysFor(0, 1)[0], Payload: []byte("to-a")})
	stop()
	if !errors.Is(err, wire.ErrHandshake) {
		t.Fatalf("ingest to a node signing with an unpinned key: %v, want a refused handshake", err)
	}

	// Explicit ServerKeys win over the credentials'.
	if _, err := dial(Options{Credentials: creds(cluster.PublicKey()), ServerKeys: []ed25519.PublicKey{impostor.PublicKey()}}); err != nil {
		t.Fatalf("explicit ServerKeys naming a's key: %v", err)
	}
	// Credentials that name no server keys pin nothing (older Secrets).
	if _, err := dial(Options{Credentials: creds()}); err != nil {
		t.Fatalf("credentials without server keys: %v", err)
	}
}

// impostor2 is a key no node signs with.
func impostor2(t *testing.T) ed25519.PublicKey { return mustGenerate(t).PublicKey() }

func mustGenerate(t *testing.T) *identity.KeyPair {
	t.Helper()
	k, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// countingListener counts the connections its server accepted.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// TestARefusedHandshakeIsNotRetried: a node signing its handshake with a
// key the client does not pin (the client kept the data Secret of before a
// credential rotation) is refused once, and Ingest and Poll return that
// refusal (wire.ErrHandshake) at once: retrying cannot change the node's
// key, and a client that retried until its context ended reported whatever
// its last attempt hit (a dial timeout under load) instead of the refusal.
func TestARefusedHandshakeIsNotRetried(t *testing.T) {
	c := newBinCluster(t)
	op, cluster, old := mustGenerate(t), mustGenerate(t), mustGenerate(t)
	c.sealedSigner(t, "b", cluster, op)
	// a signs with the cluster key, behind a listener that counts dials.
	addr := c.wire["a"]
	c.stopWire(t, "a")
	s, err := wireapi.NewServer(wireapi.ServerOptions{Backend: c.nodes["a"], RequireSealed: true,
		SessionKey: func() *identity.KeyPair { return cluster },
		Verifier:   identity.NewVerifier([]ed25519.PublicKey{op.PublicKey()})})
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ln := &countingListener{Listener: inner}
	c.srvs["a"], c.done["a"] = s, make(chan error, 1)
	go func(done chan error) { done <- s.Serve(ln) }(c.done["a"])
	c.push(t, 1, "a")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dc, err := identity.NewDataCredentials(op, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dc.ServerKeys = []ed25519.PublicKey{old.PublicKey()}
	var sent atomic.Int64
	// The topology comes over HTTP, so New succeeds; the binary
	// connections are where the pinned key is checked.
	cl, err := New(ctx, Options{Addresses: []string{c.data["a"]}, Transport: TransportBinary, RetryBase: time.Millisecond, RetryMax: time.Millisecond,
		Credentials: dc, OnBinarySend: func(ev []Event) { sent.Add(int64(len(ev))) }})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	_, err = cl.Ingest(ctx, Event{Key: keysFor(0, 1)[0], Payload: []byte("stale-pin")})
	if !errors.Is(err, wire.ErrHandshake) || errors.Is(err, wireapi.ErrConnection) {
		t.Fatalf("ingest to a node signing with an unpinned key: %v, want a refused handshake that is not a connection failure", err)
	}
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the refusal came only when the context ended: %v", err)
	}
	if n := ln.n.Load(); n != 1 {
		t.Fatalf("the client dialled a refusing node %d times for one ingest, want 1", n)
	}
	if n := sent.Load(); n != 0 {
		t.Fatalf("%d events were sent over a refused session", n)
	}

	p, err := cl.NewPoller("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Poll(ctx, 10); !errors.Is(err, wire.ErrHandshake) {
		t.Fatalf("poll of nodes signing with an unpinned key: %v, want a refused handshake", err)
	}
}
