package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
)

func mustKey(t testing.TB) *KeyPair {
	t.Helper()
	k, err := Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSecretDataRoundTrip(t *testing.T) {
	k := mustKey(t)
	data, err := k.ToSecretData()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data[SecretPrivateKey], []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Fatalf("private key is not a PKCS#8 PEM block:\n%s", data[SecretPrivateKey])
	}
	if !bytes.HasPrefix(data[SecretPublicKey], []byte("-----BEGIN PUBLIC KEY-----")) {
		t.Fatalf("public key is not a PKIX PEM block:\n%s", data[SecretPublicKey])
	}
	got, err := KeyPairFromSecretData(data)
	if err != nil {
		t.Fatal(err)
	}
	if !got.PublicKey().Equal(k.PublicKey()) || got.OriginHash() != k.OriginHash() {
		t.Fatal("loaded key pair differs from stored one")
	}
	// The loaded key signs what the original verifies.
	msg := []byte("hello")
	if sig := got.Sign(msg); !bytes.Equal(sig, k.Sign(msg)) {
		t.Fatal("ed25519 is deterministic: signatures of the same key must match")
	}
}

func TestSecretDataPublicOnlyOptional(t *testing.T) {
	k := mustKey(t)
	data, _ := k.ToSecretData()
	delete(data, SecretPublicKey)
	if _, err := KeyPairFromSecretData(data); err != nil {
		t.Fatalf("public key entry is optional: %v", err)
	}
}

func TestSecretDataRejectsMismatchedPublicKey(t *testing.T) {
	k, other := mustKey(t), mustKey(t)
	data, _ := k.ToSecretData()
	data[SecretPublicKey], _ = other.MarshalPublicKeyPEM()
	if _, err := KeyPairFromSecretData(data); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("err = %v, want ErrKeyMismatch", err)
	}
}

func TestSecretDataMissingPrivateKey(t *testing.T) {
	if _, err := KeyPairFromSecretData(map[string][]byte{}); !errors.Is(err, ErrMissingSecretKey) {
		t.Fatalf("err = %v, want ErrMissingSecretKey", err)
	}
}

func TestParsePrivateKeyRawForms(t *testing.T) {
	k := mustKey(t)
	seed := k.priv.Seed()
	fromSeed, err := ParsePrivateKey(seed)
	if err != nil || !fromSeed.PublicKey().Equal(k.PublicKey()) {
		t.Fatalf("raw seed: %v", err)
	}
	full, err := ParsePrivateKey([]byte(k.priv))
	if err != nil || !full.PublicKey().Equal(k.PublicKey()) {
		t.Fatalf("raw 64-byte key: %v", err)
	}
	tampered := bytes.Clone(k.priv)
	tampered[40] ^= 1
	if _, err := ParsePrivateKey(tampered); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("64-byte key with wrong public half: err = %v, want ErrKeyMismatch", err)
	}
	if _, err := ParsePrivateKey([]byte("short")); !errors.Is(err, ErrBadKeyEncoding) {
		t.Fatalf("garbage: err = %v, want ErrBadKeyEncoding", err)
	}
}

func TestParsePrivateKeyRejectsNonEd25519(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(ec)
	p := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if _, err := ParsePrivateKey(p); !errors.Is(err, ErrNotEd25519) {
		t.Fatalf("err = %v, want ErrNotEd25519", err)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	pp := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	if _, err := ParsePublicKey(pp); !errors.Is(err, ErrNotEd25519) {
		t.Fatalf("public: err = %v, want ErrNotEd25519", err)
	}
}

func TestParsePrivateKeyRejectsWrongPEMType(t *testing.T) {
	k := mustKey(t)
	pub, _ := k.MarshalPublicKeyPEM()
	if _, err := ParsePrivateKey(pub); !errors.Is(err, ErrBadKeyEncoding) {
		t.Fatalf("err = %v, want ErrBadKeyEncoding", err)
	}
}

func TestOriginHashIsStableAndKeySpecific(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, 32)
	a, _ := FromSeed(seed)
	b, _ := FromSeed(seed)
	c := mustKey(t)
	if a.OriginHash() != b.OriginHash() {
		t.Fatal("origin hash must be a function of the key")
	}
	if a.OriginHash() == c.OriginHash() {
		t.Fatal("different keys should have different origin hashes")
	}
	if OriginHash(a.PublicKey()) != a.OriginHash() {
		t.Fatal("OriginHash(pub) and KeyPair.OriginHash disagree")
	}
}
