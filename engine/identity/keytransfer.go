package identity

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// Key transfer: a credential rotation hands a running node the cluster's
// next private key over the admin API. The key never travels in the
// clear: Seal encrypts its seed (AES-256-GCM) under a key derived (HKDF-
// SHA256) from a private key the receiver already holds, the cluster key
// of before the rotation. So a captured admin request is useless to anyone
// who does not hold a cluster key already, and the authenticated data
// binds the box to both public keys, so it cannot be opened as a
// different key or under a different sealing key.

// ErrSealedKey: a sealed key could not be opened (wrong sealing key, or a
// tampered or truncated box).
var ErrSealedKey = errors.New("identity: sealed key does not open")

const sealInfo = "mesh-operator/key-transfer/v1"

// Seal encrypts secret's private key for holders of k's private key.
func (k *KeyPair) Seal(secret *KeyPair) ([]byte, error) {
	aead, err := k.transferAEAD()
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+ed25519.SeedSize+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("identity: seal nonce: %w", err)
	}
	return aead.Seal(nonce, nonce, secret.priv.Seed(), sealAD(k.pub, secret.pub)), nil
}

// Open decrypts a box Seal made with k and checks that it holds the
// private key of want.
func (k *KeyPair) Open(box []byte, want ed25519.PublicKey) (*KeyPair, error) {
	aead, err := k.transferAEAD()
	if err != nil {
		return nil, err
	}
	if len(box) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrSealedKey, len(box))
	}
	seed, err := aead.Open(nil, box[:aead.NonceSize()], box[aead.NonceSize():], sealAD(k.pub, want))
	if err != nil {
		return nil, ErrSealedKey
	}
	kp, err := FromSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSealedKey, err)
	}
	if !kp.pub.Equal(want) {
		return nil, fmt.Errorf("%w: holds another key", ErrSealedKey)
	}
	return kp, nil
}

func (k *KeyPair) transferAEAD() (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, k.priv.Seed(), nil, sealInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("identity: derive transfer key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("identity: transfer cipher: %w", err)
	}
	return cipher.NewGCM(block)
}

func sealAD(by, secret ed25519.PublicKey) []byte {
	ad := make([]byte, 0, len(sealInfo)+2*ed25519.PublicKeySize)
	ad = append(ad, sealInfo...)
	ad = append(ad, by...)
	return append(ad, secret...)
}
