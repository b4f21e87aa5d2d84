package identity

import (
	"crypto/ed25519"
	"errors"
	"testing"
	"time"
)

func TestSealOpensOnlyWithTheSealingKey(t *testing.T) {
	by, secret, other := mustKey(t), mustKey(t), mustKey(t)
	box, err := by.Seal(secret)
	if err != nil {
		t.Fatal(err)
	}
	got, err := by.Open(box, secret.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if !got.PublicKey().Equal(secret.PublicKey()) {
		t.Fatal("opened another key")
	}
	msg := []byte("signed by the transferred key")
	if !ed25519.Verify(secret.PublicKey(), msg, got.Sign(msg)) {
		t.Fatal("the opened key does not sign as the sealed one")
	}
	if _, err := other.Open(box, secret.PublicKey()); !errors.Is(err, ErrSealedKey) {
		t.Fatalf("opened with another key: %v", err)
	}
	if _, err := by.Open(box, other.PublicKey()); !errors.Is(err, ErrSealedKey) {
		t.Fatalf("opened as another public key: %v", err)
	}
	tampered := append([]byte(nil), box...)
	tampered[len(tampered)-1] ^= 1
	if _, err := by.Open(tampered, secret.PublicKey()); !errors.Is(err, ErrSealedKey) {
		t.Fatalf("opened a tampered box: %v", err)
	}
	if _, err := by.Open(box[:10], secret.PublicKey()); !errors.Is(err, ErrSealedKey) {
		t.Fatalf("opened a truncated box: %v", err)
	}
	again, _ := by.Seal(secret)
	if string(again) == string(box) {
		t.Fatal("two seals of one key are identical: nonce not random")
	}
}

func TestSetTrustedSwapsTheRootKeys(t *testing.T) {
	oldKey, newKey := mustKey(t), mustKey(t)
	now := time.Now()
	issue := func(k *KeyPair) *Token {
		tok, err := k.TryIssue(Grant{Subject: k.PublicKey(), Scope: ScopeAdmin, TTL: time.Minute}, now)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	v := NewVerifier([]ed25519.PublicKey{oldKey.PublicKey()})
	if err := v.Verify(issue(newKey), now, ScopeAdmin); !errors.Is(err, ErrUntrustedIssuer) {
		t.Fatalf("new key trusted before SetTrusted: %v", err)
	}
	gen := v.Generation()
	v.SetTrusted([]ed25519.PublicKey{oldKey.PublicKey(), newKey.PublicKey()})
	if v.Generation() == gen {
		t.Fatal("SetTrusted did not change the generation: caches would keep trusting dropped keys")
	}
	gen = v.Generation()
	v.SetTrusted([]ed25519.PublicKey{newKey.PublicKey(), oldKey.PublicKey()})
	if v.Generation() != gen {
		t.Fatal("setting the same keys again changed the generation: every cache would verify again for nothing")
	}
	for _, k := range []*KeyPair{oldKey, newKey} {
		if err := v.Verify(issue(k), now, ScopeAdmin); err != nil {
			t.Fatalf("grace period: %v", err)
		}
	}
	v.SetTrusted([]ed25519.PublicKey{newKey.PublicKey()})
	if err := v.Verify(issue(oldKey), now, ScopeAdmin); !errors.Is(err, ErrUntrustedIssuer) {
		t.Fatalf("old key still trusted: %v", err)
	}
	if got := v.Trusted(); len(got) != 1 || !got[0].Equal(newKey.PublicKey()) {
		t.Fatalf("Trusted() = %v", got)
	}
}
