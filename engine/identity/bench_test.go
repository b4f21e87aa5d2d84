package identity

import (
	"crypto/ed25519"
	"testing"
	"time"
)

func BenchmarkTokenVerify(b *testing.B) {
	f := newFixture(b)
	tok := f.issue(b, Grant{Scope: ScopeAdmin})
	for b.Loop() {
		if err := f.verifier.Verify(tok, t0, ScopeAdmin); err != nil {
			b.Fatal(err)
		}
	}
}

// The admin API's path: parse the header value, then verify.
func BenchmarkTokenVerifyHeader(b *testing.B) {
	f := newFixture(b)
	h := f.issue(b, Grant{Scope: ScopeAdmin, Channel: "orders"}).EncodeHeader()
	for b.Loop() {
		if _, err := f.verifier.VerifyHeader(h, t0, ScopeAdmin); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTokenVerifyDelegated(b *testing.B) {
	f := newFixture(b)
	root := f.issue(b, Grant{Scope: ScopeReplicate, Delegation: 1})
	child, err := f.node.Delegate(root, Grant{Subject: f.peer.PublicKey(), Scope: ScopeReplicate, TTL: time.Minute}, t0)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := f.verifier.Verify(child, t0, ScopeReplicate); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTokenIssue(b *testing.B) {
	k := mustKey(b)
	sub := ed25519.PublicKey(make([]byte, 32))
	for b.Loop() {
		if _, err := k.TryIssue(Grant{Subject: sub, Scope: ScopeAdmin, TTL: time.Minute}, t0); err != nil {
			b.Fatal(err)
		}
	}
}
