package wireapi

import (
	"context"
	"crypto/ed25519"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/refusal"
)

func TestTopologyOverTheWire(t *testing.T) {
	ctx := context.Background()
	n := newNode(t, nil)
	_, c := serve(t, n, nil)
	if _, err := c.Topology(ctx); !errors.Is(err, refusal.ErrNoTopology) {
		t.Fatalf("before the first topology: %v, want no_topology", err)
	}
	want := ownerOf(3, "a")
	if err := n.ApplyTopology(want); err != nil {
		t.Fatal(err)
	}
	got, err := c.Topology(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Epoch != want.Epoch || len(got.Shards) != 3 || len(got.Members) != len(want.Members) {
		t.Fatalf("topology over the wire: %+v, want %+v", got, want)
	}

	// With tokens required, the topology needs ingest or consume.
	op, _ := identity.Generate(nil)
	_, sc := serve(t, n, func(o *ServerOptions) { o.Verifier = identity.NewVerifier([]ed25519.PublicKey{op.PublicKey()}) })
	if _, err := sc.Topology(ctx); !errors.Is(err, dataapi.ErrForbidden) {
		t.Fatalf("topology without a token: %v", err)
	}
	tok, err := op.Issue(identity.Grant{Subject: op.PublicKey(), Scope: identity.ScopeConsume, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Authenticate(ctx, tok.Encode()); err != nil {
		t.Fatal(err)
	}
	if got, err := sc.Topology(ctx); err != nil || got.Epoch != want.Epoch {
		t.Fatalf("topology with a consume token: %v", err)
	}
	// Once the token's life is over, the topology is refused too.
	var late atomic.Bool
	_, ec := serve(t, n, func(o *ServerOptions) {
		o.Verifier = identity.NewVerifier([]ed25519.PublicKey{op.PublicKey()})
		o.Now = func() time.Time {
			if late.Load() {
				return time.Now().Add(2 * time.Hour)
			}
			return time.Now()
		}
	})
	if err := ec.Authenticate(ctx, tok.Encode()); err != nil {
		t.Fatal(err)
	}
	late.Store(true)
	if _, err := ec.Topology(ctx); !errors.Is(err, dataapi.ErrForbidden) {
		t.Fatalf("topology with an expired token: %v", err)
	}
}
