package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
)

// Secret data keys used by ToSecretData / KeyPairFromSecretData. They are
// plain strings so the operator can put the map straight into a Kubernetes
// Secret's data without this package importing Kubernetes.
const (
	SecretPrivateKey = "identity.key" // PKCS#8 "PRIVATE KEY" PEM
	SecretPublicKey  = "identity.pub" // PKIX "PUBLIC KEY" PEM
)

const (
	pemPrivateType = "PRIVATE KEY"
	pemPublicType  = "PUBLIC KEY"
)

// Errors returned when loading keys.
var (
	ErrNotEd25519       = errors.New("identity: key is not ed25519")
	ErrKeyMismatch      = errors.New("identity: public key does not match private key")
	ErrMissingSecretKey = errors.New("identity: secret data has no private key")
	ErrBadKeyEncoding   = errors.New("identity: unrecognised key encoding")
)

// KeyPair is an ed25519 signing identity.
type KeyPair struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
}

// Generate makes a new key pair from r (crypto/rand when r is nil).
func Generate(r io.Reader) (*KeyPair, error) {
	if r == nil {
		r = rand.Reader
	}
	pub, priv, err := ed25519.GenerateKey(r)
	if err != nil {
		return nil, fmt.Errorf("identity: generate key: %w", err)
	}
	return &KeyPair{priv: priv, pub: pub}, nil
}

// FromSeed builds the key pair for a 32-byte ed25519 seed.
func FromSeed(seed []byte) (*KeyPair, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("identity: seed is %d bytes, want %d: %w", len(seed), ed25519.SeedSize, ErrBadKeyEncoding)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	return &KeyPair{priv: priv, pub: priv.Public().(ed25519.PublicKey)}, nil
}

// PublicKey returns the public half.
func (k *KeyPair) PublicKey() ed25519.PublicKey { return k.pub }

// OriginHash is the origin hash of the public key (see OriginHash).
func (k *KeyPair) OriginHash() uint64 { return OriginHash(k.pub) }

// Sign signs msg with the private key.
func (k *KeyPair) Sign(msg []byte) []byte { return ed25519.Sign(k.priv, msg) }

// OriginHash derives a stable 64-bit name for a public key: the first eight
// bytes of its SHA-256, little endian.
func OriginHash(pub ed25519.PublicKey) uint64 {
	sum := sha256.Sum256(pub)
	return binary.LittleEndian.Uint64(sum[:8])
}

// MarshalPrivateKeyPEM encodes the private key as a PKCS#8 "PRIVATE KEY" PEM
// block, the form openssl and most tooling read.
func (k *KeyPair) MarshalPrivateKeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return nil, fmt.Errorf("identity: marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateType, Bytes: der}), nil
}

// MarshalPublicKeyPEM encodes the public key as a PKIX "PUBLIC KEY" PEM block.
func (k *KeyPair) MarshalPublicKeyPEM() ([]byte, error) {
	return MarshalPublicKeyPEM(k.pub)
}

// MarshalPublicKeyPEM encodes pub as a PKIX "PUBLIC KEY" PEM block.
func MarshalPublicKeyPEM(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("identity: marshal public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublicType, Bytes: der}), nil
}

// ParsePrivateKey loads a key pair from either a PKCS#8 PEM block or the raw
// forms people paste into Secrets: a 32-byte seed or a 64-byte ed25519
// private key. A 64-byte key whose embedded public half does not match its
// seed is rejected.
func ParsePrivateKey(data []byte) (*KeyPair, error) {
	trimmed := bytes.TrimSpace(data)
	if block, _ := pem.Decode(trimmed); block != nil {
		if block.Type != pemPrivateType {
			return nil, fmt.Errorf("identity: PEM block %q, want %q: %w", block.Type, pemPrivateType, ErrBadKeyEncoding)
		}
		key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("identity: parse PKCS#8: %w", err)
		}
		priv, ok := key.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("identity: PKCS#8 holds %T: %w", key, ErrNotEd25519)
		}
		return FromSeed(priv.Seed())
	}
	switch len(data) {
	case ed25519.SeedSize:
		return FromSeed(data)
	case ed25519.PrivateKeySize:
		k, err := FromSeed(data[:ed25519.SeedSize])
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(k.pub, data[ed25519.SeedSize:]) {
			return nil, ErrKeyMismatch
		}
		return k, nil
	}
	return nil, fmt.Errorf("identity: %d bytes is neither PEM, a seed nor a private key: %w", len(data), ErrBadKeyEncoding)
}

// ParsePublicKey loads a public key from a PKIX PEM block or 32 raw bytes.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	if block, _ := pem.Decode(bytes.TrimSpace(data)); block != nil {
		if block.Type != pemPublicType {
			return nil, fmt.Errorf("identity: PEM block %q, want %q: %w", block.Type, pemPublicType, ErrBadKeyEncoding)
		}
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("identity: parse PKIX: %w", err)
		}
		pub, ok := key.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("identity: PKIX holds %T: %w", key, ErrNotEd25519)
		}
		return pub, nil
	}
	if len(data) == ed25519.PublicKeySize {
		return ed25519.PublicKey(bytes.Clone(data)), nil
	}
	return nil, fmt.Errorf("identity: %d bytes is neither PEM nor a raw public key: %w", len(data), ErrBadKeyEncoding)
}

// ToSecretData returns the key pair as Secret data: the PKCS#8 private key
// and, for convenience of readers that only verify, the PKIX public key.
func (k *KeyPair) ToSecretData() (map[string][]byte, error) {
	priv, err := k.MarshalPrivateKeyPEM()
	if err != nil {
		return nil, err
	}
	pub, err := k.MarshalPublicKeyPEM()
	if err != nil {
		return nil, err
	}
	return map[string][]byte{SecretPrivateKey: priv, SecretPublicKey: pub}, nil
}

// KeyPairFromSecretData loads a key pair from Secret data written by
// ToSecretData (or by hand). The public key entry is optional; when present
// it must match the private key.
func KeyPairFromSecretData(data map[string][]byte) (*KeyPair, error) {
	raw, ok := data[SecretPrivateKey]
	if !ok || len(raw) == 0 {
		return nil, ErrMissingSecretKey
	}
	k, err := ParsePrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("identity: secret key %q: %w", SecretPrivateKey, err)
	}
	if rawPub, ok := data[SecretPublicKey]; ok && len(rawPub) > 0 {
		pub, err := ParsePublicKey(rawPub)
		if err != nil {
			return nil, fmt.Errorf("identity: secret key %q: %w", SecretPublicKey, err)
		}
		if !pub.Equal(k.pub) {
			return nil, ErrKeyMismatch
		}
	}
	return k, nil
}
