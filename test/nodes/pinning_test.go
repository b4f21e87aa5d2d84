package nodes

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/client"
	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/wire"
	"github.com/purplerain/mesh-operator/engine/wire/wiretest"
	"github.com/purplerain/mesh-operator/node/wireapi"
)

// TestBinaryClientPinsTheNodeKeysItsCredentialsName runs the nodes as
// processes (sealed wire ports, handshakes signed with the cluster key, as
// the operator runs them) and gives the SDK the data credentials with the
// server keys the operator's data Secret names. A man in the middle on
// another address, who ends the client's session with its own key and
// relays to a real node, is refused at the handshake: the client sends it
// no token and learns no topology. A client pinning the cluster key is
// served by the nodes. Control: a client that also trusts the relay's key
// learns the topology through it, so the refusal is the pin.
func TestBinaryClientPinsTheNodeKeysItsCredentialsName(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 220, "Leader")
	c.bootstrap()
	raw, err := os.ReadFile(filepath.Join(c.dir, "cluster.key"))
	if err != nil {
		t.Fatal(err)
	}
	ck, err := identity.ParsePrivateKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	creds := func(keys ...ed25519.PublicKey) *identity.DataCredentials {
		dc := *c.creds
		dc.ServerKeys = keys
		return &dc
	}
	relayKey, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.2.224:0")
	if err != nil {
		t.Fatal(err)
	}
	relay := wiretest.StartRelay(ln, relayKey.Sign, relayKey.PublicKey(), c.member("a0").Wire, wireapi.Subprotocol)
	defer relay.Close()

	dial := func(addr string, dc *identity.DataCredentials) (*client.Client, error) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return client.New(cctx, client.Options{WireAddresses: []string{addr}, Transport: client.TransportBinary, Credentials: dc,
			RetryBase: 5 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	}

	if _, err := dial(ln.Addr().String(), creds(ck.PublicKey())); !errors.Is(err, wire.ErrHandshake) {
		t.Fatalf("client pinning the cluster key, through a relay signing with its own: %v, want a refused handshake", err)
	}
	if n := relay.FromClient(); n != 0 {
		t.Fatalf("the relay got %d plaintext bytes from the pinned client (its token), want none", n)
	}

	cl, err := dial(c.member("a1").Wire, creds(ck.PublicKey()))
	if err != nil {
		t.Fatalf("client pinning the cluster key, straight to a node: %v", err)
	}
	defer cl.Close()
	in := ingest(cl, 2)
	defer in.halt()
	deadline := time.Now().Add(20 * time.Second)
	for in.count() < 50 {
		if time.Now().After(deadline) {
			t.Fatalf("the pinned client got %d acks", in.count())
		}
		time.Sleep(10 * time.Millisecond)
	}
	in.halt()
	c.verify(ctx, cl, in)

	// Control: trusting the relay's key too, the same relay serves the
	// topology (the nodes it names sign with the cluster key).
	viaRelay, err := dial(ln.Addr().String(), creds(relayKey.PublicKey(), ck.PublicKey()))
	if err != nil {
		t.Fatalf("client trusting the relay: %v", err)
	}
	defer viaRelay.Close()
	if relay.FromClient() == 0 {
		t.Fatal("the trusted relay carried a topology request but counted no bytes")
	}
}
