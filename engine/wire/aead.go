package wire

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"golang.org/x/crypto/chacha20poly1305"
)

const (
	// KeySize is the ChaCha20-Poly1305 key size.
	KeySize = chacha20poly1305.KeySize
	// TagSize is the Poly1305 tag appended to a sealed payload.
	TagSize = chacha20poly1305.Overhead
)

// AEAD errors.
var (
	// ErrOpen: the sealed payload or its header was altered, or the key is
	// wrong.
	ErrOpen = errors.New("wire: payload authentication failed")
	// ErrNotSealed: Open was given a packet without FlagEncrypted.
	ErrNotSealed = errors.New("wire: packet is not sealed")
	// ErrNonceExhausted: the Sealer's counter ran out; rekey.
	ErrNonceExhausted = errors.New("wire: nonce counter exhausted, rekey")
	// ErrPayloadTooLarge: the plaintext plus tag exceeds MaxPayloadSize.
	ErrPayloadTooLarge = errors.New("wire: payload too large to seal")
)

// Sealer seals payloads with ChaCha20-Poly1305 under one key. Nonces are a
// 4-byte sender prefix followed by a 64-bit counter, so a Sealer never
// repeats a nonce; two senders sharing a key (the two directions of a
// session) must use different prefixes. Keys come from session setup,
// which is outside this package.
//
// A Sealer is not safe for concurrent use; give each sending goroutine its
// own prefix and Sealer.
type Sealer struct {
	aead    cipher.AEAD
	prefix  [4]byte
	counter uint64
	// scratch for the nonce and associated data: slices of them go through
	// the cipher.AEAD interface, so stack copies would escape per call.
	nonce [NonceSize]byte
	aad   [HeaderSize]byte
}

// NewSealer returns a Sealer for a KeySize-byte key and a sender prefix.
func NewSealer(key []byte, prefix uint32) (*Sealer, error) {
	a, err := chacha20poly1305.New(key)
	if err != nil {
		return nil, fmt.Errorf("wire: sealer key: %w", err)
	}
	s := &Sealer{aead: a}
	binary.LittleEndian.PutUint32(s.prefix[:], prefix)
	return s, nil
}

// Seal appends to dst the packet made of h and plaintext sealed: it sets
// FlagEncrypted, a fresh nonce and PayloadLen in h, writes the header and
// appends ciphertext and tag. h.EventCount must fit the plaintext
// (ErrEventCount otherwise). The associated data is the encoded header
// with the hop count zeroed, since forwarders change it.
func (s *Sealer) Seal(dst []byte, h *Header, plaintext []byte) ([]byte, error) {
	if len(plaintext) > MaxPlainPayload {
		return nil, fmt.Errorf("%w: %d bytes", ErrPayloadTooLarge, len(plaintext))
	}
	if s.counter == math.MaxUint64 {
		return nil, ErrNonceExhausted
	}
	h.Flags |= FlagEncrypted
	h.PayloadLen = uint16(len(plaintext) + TagSize)
	if err := h.checkEventCount(); err != nil {
		return nil, err
	}
	copy(h.Nonce[:4], s.prefix[:])
	binary.LittleEndian.PutUint64(h.Nonce[4:], s.counter)
	s.counter++
	h.Put(&s.aad)
	dst = append(dst, s.aad[:]...)
	s.aad[hopCountOffset] = 0
	s.nonce = h.Nonce
	return s.aead.Seal(dst, s.nonce[:], plaintext, s.aad[:]), nil
}

// Opener opens payloads sealed under one key. It is safe for concurrent
// use.
type Opener struct {
	aead cipher.AEAD
}

// NewOpener returns an Opener for a KeySize-byte key.
func NewOpener(key []byte) (*Opener, error) {
	a, err := chacha20poly1305.New(key)
	if err != nil {
		return nil, fmt.Errorf("wire: opener key: %w", err)
	}
	return &Opener{aead: a}, nil
}

// Open authenticates p against its header and returns the plaintext
// payload appended to dst. The returned packet has FlagEncrypted cleared,
// PayloadLen set to the plaintext length and Payload set to the plaintext,
// ready for Events. Anti-replay is the caller's next step (ReplayGuard),
// done only after Open succeeds.
func (o *Opener) Open(dst []byte, p Packet) (Packet, error) {
	if p.Header.Flags&FlagEncrypted == 0 {
		return Packet{}, ErrNotSealed
	}
	var hb [HeaderSize]byte
	p.Header.Put(&hb)
	hb[hopCountOffset] = 0
	plain, err := o.aead.Open(dst, p.Header.Nonce[:], p.Payload, hb[:])
	if err != nil {
		return Packet{}, ErrOpen
	}
	h := p.Header
	h.Flags &^= FlagEncrypted
	h.PayloadLen = uint16(len(plain))
	return Packet{Header: h, Payload: plain}, nil
}
