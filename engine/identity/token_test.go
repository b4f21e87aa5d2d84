package identity

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

type fixture struct {
	operator, node, peer *KeyPair
	verifier             *Verifier
}

func newFixture(t testing.TB, opts ...VerifierOption) fixture {
	f := fixture{operator: mustKey(t), node: mustKey(t), peer: mustKey(t)}
	f.verifier = NewVerifier([]ed25519.PublicKey{f.operator.PublicKey()}, opts...)
	return f
}

func (f fixture) issue(t testing.TB, g Grant) *Token {
	t.Helper()
	if g.Subject == nil {
		g.Subject = f.node.PublicKey()
	}
	if g.TTL == 0 {
		g.TTL = time.Minute
	}
	tok, err := f.operator.TryIssue(g, t0)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func wantReason(t *testing.T, err, reason error) {
	t.Helper()
	if !errors.Is(err, reason) {
		t.Fatalf("err = %v, want %v", err, reason)
	}
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %T, want *VerifyError", err)
	}
}

// Net v0.9 "ttl_seconds = 0 token mints expired": TryIssue refuses a zero
// TTL instead of minting a born-expired token.
func TestTTLZeroTokenMintsExpired(t *testing.T) {
	f := newFixture(t)
	_, err := f.operator.TryIssue(Grant{Subject: f.node.PublicKey(), Scope: ScopeAdmin}, t0)
	if !errors.Is(err, ErrZeroTTL) {
		t.Fatalf("TryIssue(TTL=0) err = %v, want ErrZeroTTL", err)
	}
	_, err = f.operator.TryIssue(Grant{Subject: f.node.PublicKey(), Scope: ScopeAdmin, TTL: -time.Second}, t0)
	if !errors.Is(err, ErrNegativeTTL) {
		t.Fatalf("TryIssue(TTL<0) err = %v, want ErrNegativeTTL", err)
	}
}

// Net v0.9 "Identity::issue_token panic on Duration::ZERO": the convenience
// form clamps a zero TTL to one second.
func TestIssueTokenZeroDurationClampsToOneSecond(t *testing.T) {
	f := newFixture(t)
	tok, err := f.operator.Issue(Grant{Subject: f.node.PublicKey(), Scope: ScopeAdmin}, t0)
	if err != nil {
		t.Fatalf("Issue(TTL=0): %v", err)
	}
	if got := tok.NotAfter().Sub(tok.Leaf().NotBefore); got != time.Second {
		t.Fatalf("clamped TTL = %v, want 1s", got)
	}
	if err := f.verifier.Verify(tok, t0, ScopeAdmin); err != nil {
		t.Fatalf("clamped token must verify at issue time: %v", err)
	}
	if _, err := f.operator.Issue(Grant{Subject: f.node.PublicKey(), Scope: ScopeAdmin, TTL: -1}, t0); !errors.Is(err, ErrNegativeTTL) {
		t.Fatalf("Issue(TTL<0) err = %v, want ErrNegativeTTL", err)
	}
}

func TestIssueRejectsEmptyScope(t *testing.T) {
	f := newFixture(t)
	if _, err := f.operator.TryIssue(Grant{Subject: f.node.PublicKey(), TTL: time.Minute}, t0); !errors.Is(err, ErrEmptyScope) {
		t.Fatalf("err = %v, want ErrEmptyScope", err)
	}
}

func TestTokenHeaderRoundTripVerifies(t *testing.T) {
	f := newFixture(t)
	tok := f.issue(t, Grant{Scope: ScopeAdmin | ScopeReplicate, Channel: "orders", Shard: 7, ShardBound: true, Delegation: 1})
	h := tok.EncodeHeader()
	if strings.ContainsAny(h, "+/= \t\r\n") {
		t.Fatalf("header value %q is not unpadded base64url", h)
	}
	if len(h) > 300 {
		t.Fatalf("root token header is %d chars, want compact (<300)", len(h))
	}
	got, err := f.verifier.VerifyHeader(h, t0.Add(30*time.Second), ScopeAdmin, ForChannel("orders"), ForShard(7))
	if err != nil {
		t.Fatal(err)
	}
	l := got.Leaf()
	want := tok.Leaf()
	if !l.Subject.Equal(want.Subject) || l.Scope != want.Scope || l.Channel != "orders" || !l.ShardBound || l.Shard != 7 ||
		!l.NotBefore.Equal(want.NotBefore) || !l.NotAfter.Equal(want.NotAfter) || l.Delegation != 1 || l.Nonce != want.Nonce {
		t.Fatalf("round trip changed the token: %+v vs %+v", l, want)
	}
}

func TestVerifyExpiredWithSkew(t *testing.T) {
	f := newFixture(t, WithClockSkew(5*time.Second))
	tok := f.issue(t, Grant{Scope: ScopeAdmin, TTL: time.Minute})
	if err := f.verifier.Verify(tok, t0.Add(time.Minute+4*time.Second), ScopeAdmin); err != nil {
		t.Fatalf("within skew after expiry must pass: %v", err)
	}
	wantReason(t, f.verifier.Verify(tok, t0.Add(time.Minute+5*time.Second), ScopeAdmin), ErrExpired)
}

func TestVerifyNotYetValidWithSkew(t *testing.T) {
	f := newFixture(t, WithClockSkew(5*time.Second))
	tok := f.issue(t, Grant{Scope: ScopeAdmin, NotBefore: t0.Add(time.Hour)})
	if err := f.verifier.Verify(tok, t0.Add(time.Hour-5*time.Second), ScopeAdmin); err != nil {
		t.Fatalf("within skew before start must pass: %v", err)
	}
	wantReason(t, f.verifier.Verify(tok, t0.Add(time.Hour-5*time.Second-time.Millisecond), ScopeAdmin), ErrNotYetValid)
}

func TestVerifyTamperedTokenBadSignature(t *testing.T) {
	f := newFixture(t)
	tok := f.issue(t, Grant{Scope: ScopeConsume})
	raw := tok.Encode()
	// Flip the scope to admin: the layout is version, count, issuer, subject, scope.
	scopeAt := 2 + 32 + 32
	raw[scopeAt] |= byte(ScopeAdmin)
	forged, err := ParseToken(raw)
	if err != nil {
		t.Fatal(err)
	}
	wantReason(t, f.verifier.Verify(forged, t0, ScopeAdmin), ErrBadSignature)

	// Every single-bit flip of the signed body or signature is refused.
	for i := 2; i < len(raw); i++ {
		b := tok.Encode()
		b[i] ^= 0x01
		tt, err := ParseToken(b)
		if err != nil {
			continue // flipped a length or flag byte into an invalid form
		}
		if err := f.verifier.Verify(tt, t0, ScopeConsume); err == nil {
			t.Fatalf("bit flip at byte %d still verifies", i)
		}
	}
}

func TestVerifyUntrustedIssuer(t *testing.T) {
	f := newFixture(t)
	rogue, _ := f.peer.TryIssue(Grant{Subject: f.node.PublicKey(), Scope: ScopeAdmin, TTL: time.Minute}, t0)
	wantReason(t, f.verifier.Verify(rogue, t0, ScopeAdmin), ErrUntrustedIssuer)
}

func TestVerifyWrongScope(t *testing.T) {
	f := newFixture(t)
	tok := f.issue(t, Grant{Scope: ScopeIngest | ScopeConsume})
	wantReason(t, f.verifier.Verify(tok, t0, ScopeAdmin), ErrWrongScope)
	wantReason(t, f.verifier.Verify(tok, t0, ScopeIngest|ScopeReplicate), ErrWrongScope)
	if err := f.verifier.Verify(tok, t0, ScopeIngest|ScopeConsume); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyWrongBinding(t *testing.T) {
	f := newFixture(t)
	tok := f.issue(t, Grant{Scope: ScopeIngest, Channel: "a", Shard: 3, ShardBound: true})
	wantReason(t, f.verifier.Verify(tok, t0, ScopeIngest, ForChannel("b")), ErrWrongBinding)
	wantReason(t, f.verifier.Verify(tok, t0, ScopeIngest, ForShard(4)), ErrWrongBinding)
	unbound := f.issue(t, Grant{Scope: ScopeIngest})
	if err := f.verifier.Verify(unbound, t0, ScopeIngest, ForChannel("b"), ForShard(4)); err != nil {
		t.Fatalf("an unbound token allows any channel and shard: %v", err)
	}
}

func TestVerifyPresentedZeroTTL(t *testing.T) {
	f := newFixture(t)
	// Sign a link with an empty window by hand: only a buggy or hostile
	// issuer produces one, and the verifier names it.
	l := &Link{Issuer: f.operator.PublicKey(), Subject: f.node.PublicKey(), Scope: ScopeAdmin, NotBefore: t0, NotAfter: t0}
	_ = f.operator.sign(l, nil)
	wantReason(t, f.verifier.Verify(&Token{Chain: []Link{*l}}, t0, ScopeAdmin), ErrZeroTTL)
}

func TestDelegationChainVerifies(t *testing.T) {
	f := newFixture(t)
	root := f.issue(t, Grant{Scope: ScopeReplicate | ScopeConsume, TTL: time.Hour, Delegation: 2})
	child, err := f.node.Delegate(root, Grant{Subject: f.peer.PublicKey(), Scope: ScopeReplicate, TTL: 2 * time.Hour, Delegation: 1}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !child.NotAfter().Equal(root.NotAfter()) {
		t.Fatalf("child window %v not clipped to parent's %v", child.NotAfter(), root.NotAfter())
	}
	parsed, err := f.verifier.VerifyHeader(child.EncodeHeader(), t0.Add(time.Minute), ScopeReplicate)
	if err != nil {
		t.Fatal(err)
	}
	if !parsed.Subject().Equal(f.peer.PublicKey()) || len(parsed.Chain) != 2 {
		t.Fatal("delegated token lost its chain")
	}
	wantReason(t, f.verifier.Verify(child, t0, ScopeConsume), ErrWrongScope)
}

func TestDelegationTooDeep(t *testing.T) {
	f := newFixture(t, WithMaxDelegationDepth(1))
	third := mustKey(t)

	noDelegation := f.issue(t, Grant{Scope: ScopeAdmin})
	if _, err := f.node.Delegate(noDelegation, Grant{Subject: f.peer.PublicKey(), Scope: ScopeAdmin, TTL: time.Minute}, t0); !errors.Is(err, ErrDelegationTooDeep) {
		t.Fatalf("delegating a depth-0 token: err = %v, want ErrDelegationTooDeep", err)
	}

	root := f.issue(t, Grant{Scope: ScopeAdmin, Delegation: 3})
	if _, err := f.node.Delegate(root, Grant{Subject: f.peer.PublicKey(), Scope: ScopeAdmin, TTL: time.Minute, Delegation: 3}, t0); !errors.Is(err, ErrDelegationTooDeep) {
		t.Fatalf("child depth not below parent's: err = %v, want ErrDelegationTooDeep", err)
	}
	one, err := f.node.Delegate(root, Grant{Subject: f.peer.PublicKey(), Scope: ScopeAdmin, TTL: time.Minute, Delegation: 2}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.verifier.Verify(one, t0, ScopeAdmin); err != nil {
		t.Fatalf("one level is within policy: %v", err)
	}
	two, err := f.peer.Delegate(one, Grant{Subject: third.PublicKey(), Scope: ScopeAdmin, TTL: time.Minute, Delegation: 1}, t0)
	if err != nil {
		t.Fatal(err)
	}
	wantReason(t, f.verifier.Verify(two, t0, ScopeAdmin), ErrDelegationTooDeep)

	// A hand-signed child of a depth-0 parent is refused even by a lenient verifier.
	lenient := NewVerifier([]ed25519.PublicKey{f.operator.PublicKey()}, WithMaxDelegationDepth(5))
	l := Link{Issuer: f.node.PublicKey(), Subject: f.peer.PublicKey(), Scope: ScopeAdmin, NotBefore: t0, NotAfter: t0.Add(time.Minute)}
	_ = f.node.sign(&l, noDelegation.Leaf().Signature)
	forged := &Token{Chain: []Link{noDelegation.Chain[0], l}}
	wantReason(t, lenient.Verify(forged, t0, ScopeAdmin), ErrDelegationTooDeep)
}

func TestDelegationEscalationRefused(t *testing.T) {
	f := newFixture(t)
	root := f.issue(t, Grant{Scope: ScopeConsume, Channel: "a", Delegation: 1})
	if _, err := f.node.Delegate(root, Grant{Subject: f.peer.PublicKey(), Scope: ScopeAdmin, TTL: time.Minute}, t0); !errors.Is(err, ErrEscalation) {
		t.Fatalf("wider scope: err = %v, want ErrEscalation", err)
	}
	if _, err := f.node.Delegate(root, Grant{Subject: f.peer.PublicKey(), Scope: ScopeConsume, Channel: "b", TTL: time.Minute}, t0); !errors.Is(err, ErrEscalation) {
		t.Fatalf("other channel: err = %v, want ErrEscalation", err)
	}
	inherited, err := f.node.Delegate(root, Grant{Subject: f.peer.PublicKey(), Scope: ScopeConsume, TTL: time.Minute}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if inherited.Leaf().Channel != "a" {
		t.Fatalf("child did not inherit the channel binding: %q", inherited.Leaf().Channel)
	}
	if _, err := f.peer.Delegate(root, Grant{Subject: f.peer.PublicKey(), Scope: ScopeConsume, TTL: time.Minute}, t0); !errors.Is(err, ErrNotSubject) {
		t.Fatalf("non-subject delegating: err = %v, want ErrNotSubject", err)
	}

	// A hand-signed child that widens its parent's scope is refused on verify.
	l := Link{Issuer: f.node.PublicKey(), Subject: f.peer.PublicKey(), Scope: ScopeAdmin | ScopeConsume, Channel: "a", NotBefore: t0, NotAfter: t0.Add(time.Second)}
	_ = f.node.sign(&l, root.Leaf().Signature)
	wantReason(t, f.verifier.Verify(&Token{Chain: []Link{root.Chain[0], l}}, t0, ScopeAdmin), ErrEscalation)
}

func TestDelegatedLinkCannotBeReattached(t *testing.T) {
	f := newFixture(t)
	narrow := f.issue(t, Grant{Scope: ScopeConsume, Delegation: 1})
	wide := f.issue(t, Grant{Scope: ScopeConsume, Delegation: 1})
	child, err := f.node.Delegate(narrow, Grant{Subject: f.peer.PublicKey(), Scope: ScopeConsume, TTL: time.Minute}, t0)
	if err != nil {
		t.Fatal(err)
	}
	spliced := &Token{Chain: []Link{wide.Chain[0], child.Chain[1]}}
	wantReason(t, f.verifier.Verify(spliced, t0, ScopeConsume), ErrBadSignature)
}

func TestVerifyBrokenChain(t *testing.T) {
	f := newFixture(t)
	root := f.issue(t, Grant{Scope: ScopeConsume, Delegation: 1})
	l := Link{Issuer: f.peer.PublicKey(), Subject: f.peer.PublicKey(), Scope: ScopeConsume, NotBefore: t0, NotAfter: t0.Add(time.Second)}
	_ = f.peer.sign(&l, root.Leaf().Signature)
	wantReason(t, f.verifier.Verify(&Token{Chain: []Link{root.Chain[0], l}}, t0, ScopeConsume), ErrBrokenChain)
}

func TestParseTokenRejectsMalformed(t *testing.T) {
	f := newFixture(t)
	good := f.issue(t, Grant{Scope: ScopeAdmin, Channel: "c"}).Encode()
	cases := map[string][]byte{
		"empty":          nil,
		"bad version":    append([]byte{9}, good[1:]...),
		"zero links":     append([]byte{1, 0}, good[2:]...),
		"too many links": append([]byte{1, MaxChainLinks + 1}, good[2:]...),
		"truncated":      good[:len(good)-1],
		"trailing byte":  append(bytes.Clone(good), 0),
	}
	badFlags := bytes.Clone(good)
	badFlags[2+32+32+4] |= 0x80
	cases["unknown flag"] = badFlags
	for name, raw := range cases {
		if _, err := ParseToken(raw); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
	if _, err := ParseHeader("not base64!"); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad header: err = %v, want ErrMalformed", err)
	}
	if _, err := f.verifier.VerifyHeader(strings.Repeat("A", 10000), t0, ScopeAdmin); !errors.Is(err, ErrMalformed) {
		t.Errorf("oversized header: err = %v, want ErrMalformed", err)
	}
}

func TestScopeString(t *testing.T) {
	if got := (ScopeAdmin | ScopeReplicate | 1<<20).String(); got != "admin|replicate|0x100000" {
		t.Fatalf("String() = %q", got)
	}
	if Scope(0).String() != "none" {
		t.Fatal("empty scope")
	}
}

func FuzzParseHeader(f *testing.F) {
	k, _ := FromSeed(bytes.Repeat([]byte{1}, 32))
	tok, _ := k.TryIssue(Grant{Subject: k.PublicKey(), Scope: ScopeAdmin, TTL: time.Minute, Channel: "x", ShardBound: true, Delegation: 1}, t0)
	f.Add(tok.EncodeHeader())
	f.Add("")
	f.Add("AQE")
	v := NewVerifier([]ed25519.PublicKey{k.PublicKey()})
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseHeader(s)
		if err != nil {
			return
		}
		if again, err := ParseHeader(tok.EncodeHeader()); err != nil || !bytes.Equal(again.Encode(), tok.Encode()) {
			t.Fatalf("re-encoding a parsed token is not stable: %v", err)
		}
		_ = v.Verify(tok, t0, ScopeAdmin)
	})
}

// Signatures are checked before time and scope, so a forged token learns
// nothing about which of those it would have failed.
func TestVerifyChecksSignatureBeforeTimeAndScope(t *testing.T) {
	f := newFixture(t)
	tok := f.issue(t, Grant{Scope: ScopeConsume, TTL: time.Second})
	tok.Chain[0].Signature[0] ^= 1
	wantReason(t, f.verifier.Verify(tok, t0.Add(time.Hour), ScopeAdmin), ErrBadSignature)
}

func TestVerifyErrorNamesTheLink(t *testing.T) {
	f := newFixture(t)
	root := f.issue(t, Grant{Scope: ScopeConsume, TTL: time.Hour, Delegation: 1})
	child, err := f.node.Delegate(root, Grant{Subject: f.peer.PublicKey(), Scope: ScopeConsume, TTL: time.Minute}, t0)
	if err != nil {
		t.Fatal(err)
	}
	err = f.verifier.Verify(child, t0.Add(10*time.Minute), ScopeConsume)
	var ve *VerifyError
	if !errors.As(err, &ve) || !errors.Is(err, ErrExpired) || ve.Link != 1 {
		t.Fatalf("err = %v, want ErrExpired on link 1", err)
	}
	if !strings.Contains(err.Error(), "link 1") {
		t.Fatalf("message %q does not name the link", err)
	}
}
