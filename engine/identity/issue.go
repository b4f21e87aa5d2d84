package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"time"
	"unicode/utf8"
)

// Grant describes a token to issue.
type Grant struct {
	Subject ed25519.PublicKey
	Scope   Scope
	// TTL is how long the token is valid from NotBefore. It is kept with
	// millisecond precision; a positive TTL below one millisecond rounds up.
	TTL time.Duration
	// NotBefore defaults to the issuing time.
	NotBefore time.Time
	// Channel, when non-empty, binds the token to one channel.
	Channel string
	// Shard, when ShardBound, binds the token to one shard.
	Shard      uint16
	ShardBound bool
	// Delegation is how many further levels of delegation the subject may
	// issue below this token (0: none).
	Delegation uint8
}

// TryIssue signs a root token for g at time now. A zero TTL is ErrZeroTTL
// and a negative one ErrNegativeTTL: a token is never minted born-expired.
func (k *KeyPair) TryIssue(g Grant, now time.Time) (*Token, error) {
	l, err := k.newLink(g, now)
	if err != nil {
		return nil, err
	}
	if err := k.sign(l, nil); err != nil {
		return nil, err
	}
	return &Token{Chain: []Link{*l}}, nil
}

// Issue is TryIssue for callers that treat a zero TTL as "as short as
// possible": it clamps a zero TTL to one second instead of failing (the
// Net v0.9 soft clamp). Every other error is still returned.
func (k *KeyPair) Issue(g Grant, now time.Time) (*Token, error) {
	if g.TTL == 0 {
		g.TTL = time.Second
	}
	return k.TryIssue(g, now)
}

// Delegate signs a child of parent for g at time now. k must be parent's
// subject and the parent must allow delegation. The child may only narrow
// the parent: its scope must be a subset (else ErrEscalation), its Delegation
// below the parent's (else ErrDelegationTooDeep), an empty binding inherits
// the parent's and a different one is ErrEscalation, and its window is
// clipped to the parent's (ErrExpired if nothing is left).
func (k *KeyPair) Delegate(parent *Token, g Grant, now time.Time) (*Token, error) {
	if parent == nil || len(parent.Chain) == 0 {
		return nil, fmt.Errorf("%w: no parent", ErrMalformed)
	}
	if len(parent.Chain) >= MaxChainLinks {
		return nil, fmt.Errorf("%w: chain already has %d links", ErrDelegationTooDeep, len(parent.Chain))
	}
	p := parent.Leaf()
	if !p.Subject.Equal(k.pub) {
		return nil, ErrNotSubject
	}
	if p.Delegation == 0 {
		return nil, fmt.Errorf("%w: parent allows no delegation", ErrDelegationTooDeep)
	}
	if g.Delegation >= p.Delegation {
		return nil, fmt.Errorf("%w: child delegation %d, parent allows below %d", ErrDelegationTooDeep, g.Delegation, p.Delegation)
	}
	if !p.Scope.Has(g.Scope) {
		return nil, fmt.Errorf("%w: scope %v not within %v", ErrEscalation, g.Scope, p.Scope)
	}
	if g.Channel == "" {
		g.Channel = p.Channel
	} else if p.Channel != "" && g.Channel != p.Channel {
		return nil, fmt.Errorf("%w: channel %q, parent bound to %q", ErrEscalation, g.Channel, p.Channel)
	}
	if !g.ShardBound {
		g.Shard, g.ShardBound = p.Shard, p.ShardBound
	} else if p.ShardBound && g.Shard != p.Shard {
		return nil, fmt.Errorf("%w: shard %d, parent bound to %d", ErrEscalation, g.Shard, p.Shard)
	}
	l, err := k.newLink(g, now)
	if err != nil {
		return nil, err
	}
	if l.NotBefore.Before(p.NotBefore) {
		l.NotBefore = p.NotBefore
	}
	if l.NotAfter.After(p.NotAfter) {
		l.NotAfter = p.NotAfter
	}
	if !l.NotAfter.After(l.NotBefore) {
		return nil, fmt.Errorf("%w: parent window ends at %v", ErrExpired, p.NotAfter)
	}
	if err := k.sign(l, p.Signature); err != nil {
		return nil, err
	}
	chain := make([]Link, 0, len(parent.Chain)+1)
	chain = append(chain, parent.Chain...)
	return &Token{Chain: append(chain, *l)}, nil
}

func (k *KeyPair) newLink(g Grant, now time.Time) (*Link, error) {
	switch {
	case g.TTL == 0:
		return nil, ErrZeroTTL
	case g.TTL < 0:
		return nil, fmt.Errorf("%w: %v", ErrNegativeTTL, g.TTL)
	case g.Scope == 0:
		return nil, ErrEmptyScope
	case len(g.Subject) != ed25519.PublicKeySize:
		return nil, fmt.Errorf("%w: subject key is %d bytes", ErrMalformed, len(g.Subject))
	case len(g.Channel) > MaxChannelLen || !utf8.ValidString(g.Channel):
		return nil, fmt.Errorf("%w: channel binding must be UTF-8 of at most %d bytes", ErrMalformed, MaxChannelLen)
	}
	nb := g.NotBefore
	if nb.IsZero() {
		nb = now
	}
	nb = time.UnixMilli(nb.UnixMilli())
	ttl := (g.TTL + time.Millisecond - 1).Truncate(time.Millisecond)
	l := &Link{
		Issuer:     k.pub,
		Subject:    g.Subject,
		Scope:      g.Scope,
		Channel:    g.Channel,
		Shard:      g.Shard,
		ShardBound: g.ShardBound,
		NotBefore:  nb,
		NotAfter:   nb.Add(ttl),
		Delegation: g.Delegation,
	}
	if _, err := rand.Read(l.Nonce[:]); err != nil {
		return nil, fmt.Errorf("identity: token nonce: %w", err)
	}
	return l, nil
}

func (k *KeyPair) sign(l *Link, parentSig []byte) error {
	l.Signature = ed25519.Sign(k.priv, l.signingInput(parentSig))
	return nil
}
