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
)

func issue(t *testing.T, issuer, subject *identity.KeyPair, scope identity.Scope, now time.Time, ttl time.Duration) []byte {
	t.Helper()
	tok, err := issuer.Issue(identity.Grant{Subject: subject.PublicKey(), Scope: scope, TTL: ttl}, now)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Encode()
}

func TestAuthenticationIsOptIn(t *testing.T) {
	ctx := context.Background()
	t.Run("without a verifier a token is ignored", func(t *testing.T) {
		_, c := serve(t, newNode(t, ownerOf(1, "a")), nil)
		if err := c.Authenticate(ctx, []byte("anything")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Ingest(ctx, []dataapi.Event{{Payload: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
	})

	op, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	app, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	var clock atomic.Int64 // Unix seconds; servers read it concurrently
	clock.Store(now.Unix())
	verified := func(o *ServerOptions) {
		o.Verifier = identity.NewVerifier([]ed25519.PublicKey{op.PublicKey()})
		o.Now = func() time.Time { return time.Unix(clock.Load(), 0) }
	}
	rejected := func(t *testing.T, err error, what string) {
		t.Helper()
		var re *RefusedError
		if !errors.As(err, &re) || re.Code != dataapi.CodeRejected || re.Status() != 403 {
			t.Fatalf("%s: got %v, want a rejected refusal", what, err)
		}
	}

	t.Run("with a verifier every request needs a token with its scope", func(t *testing.T) {
		n := newNode(t, ownerOf(1, "a"))
		_, c := serve(t, n, verified)
		_, err := c.Ingest(ctx, []dataapi.Event{{Payload: []byte("x")}})
		rejected(t, err, "ingest before auth")
		rejected(t, c.Authenticate(ctx, issue(t, stranger, app, identity.ScopeIngest, now, time.Hour)), "token from an untrusted issuer")
		rejected(t, c.Authenticate(ctx, issue(t, op, app, identity.ScopeAdmin, now, time.Hour)), "admin-only token")

		if err := c.Authenticate(ctx, issue(t, op, app, identity.ScopeIngest, now, time.Minute)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Ingest(ctx, []dataapi.Event{{Payload: []byte("x")}}); err != nil {
			t.Fatalf("ingest with ScopeIngest: %v", err)
		}
		_, err = c.Poll(ctx, dataapi.PollRequest{Limit: 10})
		rejected(t, err, "poll with an ingest-only token")

		if err := c.Authenticate(ctx, issue(t, op, app, identity.ScopeIngest|identity.ScopeConsume, now, time.Minute)); err != nil {
			t.Fatal(err)
		}
		page, err := c.Poll(ctx, dataapi.PollRequest{Limit: 10})
		if err != nil || len(page.Events) != 1 {
			t.Fatalf("poll with ScopeConsume: %d events, %v", len(page.Events), err)
		}
		clock.Store(now.Add(2 * time.Minute).Unix()) // past the token's TTL
		_, err = c.Ingest(ctx, []dataapi.Event{{Payload: []byte("late")}})
		rejected(t, err, "ingest after the token expired")
		clock.Store(now.Unix())
		page, err = c.Poll(ctx, dataapi.PollRequest{Limit: 10})
		if err != nil || len(page.Events) != 1 {
			t.Fatalf("the refused ingest appended something: %d events, %v", len(page.Events), err)
		}
	})
}

// TestRotationDropsTheGrantOfAnOpenConnection: a connection authenticated
// with a token whose root key a credential rotation drops loses its grant
// on its next request, although the token has not expired; one rooted at
// a key still trusted keeps it.
func TestRotationDropsTheGrantOfAnOpenConnection(t *testing.T) {
	ctx := context.Background()
	oldKey, _ := identity.Generate(nil)
	newKey, _ := identity.Generate(nil)
	app, _ := identity.Generate(nil)
	now := time.Now()
	v := identity.NewVerifier([]ed25519.PublicKey{oldKey.PublicKey(), newKey.PublicKey()})
	n := newNode(t, ownerOf(1, "a"))
	withVerifier := func(o *ServerOptions) { o.Verifier = v }
	_, oldConn := serve(t, n, withVerifier)
	_, newConn := serve(t, n, withVerifier)
	if err := oldConn.Authenticate(ctx, issue(t, oldKey, app, identity.ScopeIngest, now, time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := newConn.Authenticate(ctx, issue(t, newKey, app, identity.ScopeIngest, now, time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Conn{oldConn, newConn} {
		if _, err := c.Ingest(ctx, []dataapi.Event{{Payload: []byte("grace")}}); err != nil {
			t.Fatalf("during the grace period: %v", err)
		}
	}
	v.SetTrusted([]ed25519.PublicKey{newKey.PublicKey()})
	var re *RefusedError
	if _, err := oldConn.Ingest(ctx, []dataapi.Event{{Payload: []byte("after")}}); !errors.As(err, &re) || re.Code != dataapi.CodeRejected {
		t.Fatalf("old-key connection after the drop: %v, want a rejected refusal", err)
	}
	if _, err := newConn.Ingest(ctx, []dataapi.Event{{Payload: []byte("after")}}); err != nil {
		t.Fatalf("new-key connection after the drop: %v", err)
	}
}
