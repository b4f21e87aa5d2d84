package identity

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"time"
	"unicode/utf8"
)

// HeaderName is the HTTP header that carries a token (EncodeHeader form).
const HeaderName = "Mesh-Token"

const (
	tokenFormatVersion = 1
	// MaxChainLinks bounds how many links a parser accepts, whatever the
	// verifier's policy, so a hostile header cannot make us verify an
	// unbounded number of signatures.
	MaxChainLinks = 8
	// MaxChannelLen is the longest channel name a token can be bound to.
	MaxChannelLen = 255
	// NonceSize is the size of a token's random nonce.
	NonceSize = 16

	linkFlagShard   = 1 << 0
	linkFlagChannel = 1 << 1
	linkFlagsKnown  = linkFlagShard | linkFlagChannel

	// fixed part of a link: issuer, subject, scope, flags, not-before,
	// not-after, delegation, nonce, signature.
	linkFixedSize = 32 + 32 + 4 + 1 + 8 + 8 + 1 + NonceSize + ed25519.SignatureSize
	// maxEncodedSize bounds a parsed token (header values included).
	maxEncodedSize = 2 + MaxChainLinks*(linkFixedSize+2+1+MaxChannelLen)
)

// signingDomain separates token signatures from anything else the same key
// might sign.
var signingDomain = []byte("mesh-operator/permission-token/v1\x00")

// Link is one signed grant: Issuer lets Subject act within Scope (and the
// optional channel/shard binding) between NotBefore and NotAfter. A link
// with Delegation > 0 lets its subject issue a child link with a smaller
// Delegation.
type Link struct {
	Issuer  ed25519.PublicKey
	Subject ed25519.PublicKey
	Scope   Scope
	// Channel, when non-empty, restricts the grant to that channel.
	Channel string
	// Shard, when ShardBound, restricts the grant to that shard.
	Shard      uint16
	ShardBound bool
	// NotBefore and NotAfter bound validity: NotBefore <= now < NotAfter.
	// Both are kept with millisecond precision.
	NotBefore time.Time
	NotAfter  time.Time
	// Delegation is how many further levels of delegation this link allows.
	Delegation uint8
	Nonce      [NonceSize]byte
	Signature  []byte
}

// Token is a delegation chain of links, the root (signed by a trusted key)
// first and the presented grant (the leaf) last.
type Token struct {
	Chain []Link
}

// Leaf is the link that states what the bearer may do.
func (t *Token) Leaf() *Link { return &t.Chain[len(t.Chain)-1] }

// Subject is the key the token was issued to.
func (t *Token) Subject() ed25519.PublicKey { return t.Leaf().Subject }

// Scope is the leaf's scope.
func (t *Token) Scope() Scope { return t.Leaf().Scope }

// NotAfter is when the leaf expires.
func (t *Token) NotAfter() time.Time { return t.Leaf().NotAfter }

// appendBody appends the signed fields of l (everything but the signature).
func (l *Link) appendBody(b []byte) []byte {
	b = append(b, l.Issuer...)
	b = append(b, l.Subject...)
	b = binary.LittleEndian.AppendUint32(b, uint32(l.Scope))
	var flags byte
	if l.ShardBound {
		flags |= linkFlagShard
	}
	if l.Channel != "" {
		flags |= linkFlagChannel
	}
	b = append(b, flags)
	if l.ShardBound {
		b = binary.LittleEndian.AppendUint16(b, l.Shard)
	}
	if l.Channel != "" {
		b = append(b, byte(len(l.Channel)))
		b = append(b, l.Channel...)
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(l.NotBefore.UnixMilli()))
	b = binary.LittleEndian.AppendUint64(b, uint64(l.NotAfter.UnixMilli()))
	b = append(b, l.Delegation)
	b = append(b, l.Nonce[:]...)
	return b
}

// signingInput is what a link's signature covers: the domain tag, the
// link's fields and the parent's signature (nil for the root), which ties
// a delegated link to exactly one parent.
func (l *Link) signingInput(parentSig []byte) []byte {
	b := make([]byte, 0, len(signingDomain)+linkFixedSize+3+len(l.Channel)+ed25519.SignatureSize)
	b = append(b, signingDomain...)
	b = l.appendBody(b)
	return append(b, parentSig...)
}

// Encode returns the compact binary form of the token.
func (t *Token) Encode() []byte {
	b := make([]byte, 0, 2+len(t.Chain)*(linkFixedSize+8))
	b = append(b, tokenFormatVersion, byte(len(t.Chain)))
	for i := range t.Chain {
		b = t.Chain[i].appendBody(b)
		b = append(b, t.Chain[i].Signature...)
	}
	return b
}

// EncodeHeader returns the token as an HTTP header value: the binary form in
// unpadded base64url.
func (t *Token) EncodeHeader() string {
	return base64.RawURLEncoding.EncodeToString(t.Encode())
}

// ParseHeader parses a header value written by EncodeHeader. It checks the
// form only; call Verifier.Verify before trusting it.
func ParseHeader(value string) (*Token, error) {
	if base64.RawURLEncoding.DecodedLen(len(value)) > maxEncodedSize {
		return nil, fmt.Errorf("%w: header value is %d bytes", ErrMalformed, len(value))
	}
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return ParseToken(raw)
}

// ParseToken parses the binary form written by Encode. It rejects unknown
// versions and flags, lengths out of range and trailing bytes. It checks
// the form only; call Verifier.Verify before trusting it.
func ParseToken(raw []byte) (*Token, error) {
	if len(raw) > maxEncodedSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrMalformed, len(raw))
	}
	if len(raw) < 2 {
		return nil, fmt.Errorf("%w: too short", ErrMalformed)
	}
	if raw[0] != tokenFormatVersion {
		return nil, fmt.Errorf("%w: format version %d", ErrMalformed, raw[0])
	}
	n := int(raw[1])
	if n == 0 || n > MaxChainLinks {
		return nil, fmt.Errorf("%w: %d links", ErrMalformed, n)
	}
	r := reader{b: raw[2:]}
	t := &Token{Chain: make([]Link, n)}
	for i := range t.Chain {
		if err := r.link(&t.Chain[i]); err != nil {
			return nil, fmt.Errorf("%w: link %d: %v", ErrMalformed, i, err)
		}
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(r.b))
	}
	return t, nil
}

type reader struct{ b []byte }

func (r *reader) take(n int) ([]byte, error) {
	if len(r.b) < n {
		return nil, fmt.Errorf("need %d bytes, have %d", n, len(r.b))
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out, nil
}

func (r *reader) link(l *Link) error {
	head, err := r.take(32 + 32 + 4 + 1)
	if err != nil {
		return err
	}
	l.Issuer = ed25519.PublicKey(bytes.Clone(head[0:32]))
	l.Subject = ed25519.PublicKey(bytes.Clone(head[32:64]))
	l.Scope = Scope(binary.LittleEndian.Uint32(head[64:68]))
	flags := head[68]
	if flags&^linkFlagsKnown != 0 {
		return fmt.Errorf("unknown flags 0x%x", flags)
	}
	if flags&linkFlagShard != 0 {
		s, err := r.take(2)
		if err != nil {
			return err
		}
		l.ShardBound, l.Shard = true, binary.LittleEndian.Uint16(s)
	}
	if flags&linkFlagChannel != 0 {
		ln, err := r.take(1)
		if err != nil {
			return err
		}
		if ln[0] == 0 {
			return fmt.Errorf("empty channel binding")
		}
		name, err := r.take(int(ln[0]))
		if err != nil {
			return err
		}
		if !utf8.Valid(name) {
			return fmt.Errorf("channel name is not UTF-8")
		}
		l.Channel = string(name)
	}
	tail, err := r.take(8 + 8 + 1 + NonceSize + ed25519.SignatureSize)
	if err != nil {
		return err
	}
	l.NotBefore = time.UnixMilli(int64(binary.LittleEndian.Uint64(tail[0:8])))
	l.NotAfter = time.UnixMilli(int64(binary.LittleEndian.Uint64(tail[8:16])))
	l.Delegation = tail[16]
	copy(l.Nonce[:], tail[17:17+NonceSize])
	l.Signature = bytes.Clone(tail[17+NonceSize:])
	return nil
}
