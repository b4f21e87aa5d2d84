package identity

import (
	"crypto/ed25519"
	"sync/atomic"
	"time"
)

const (
	// DefaultClockSkew is how far the verifier's clock may disagree with the
	// issuer's before a token is refused as expired or not yet valid.
	DefaultClockSkew = 5 * time.Second
	// DefaultMaxDelegationDepth is how many delegated links below the root
	// a verifier accepts unless told otherwise.
	DefaultMaxDelegationDepth = 2
)

// Verifier checks tokens against a set of trusted root keys. The set can be
// replaced while the verifier is in use (SetTrusted): a credential
// rotation makes a running node trust a new key next to the old one, then
// the new one alone, without a restart.
type Verifier struct {
	trusted  atomic.Pointer[[]ed25519.PublicKey]
	gen      atomic.Uint64
	skew     time.Duration
	maxDepth int
}

// VerifierOption configures a Verifier.
type VerifierOption func(*Verifier)

// WithClockSkew sets the clock-skew allowance (negative values count as 0).
func WithClockSkew(d time.Duration) VerifierOption {
	return func(v *Verifier) { v.skew = max(d, 0) }
}

// WithMaxDelegationDepth sets how many delegated links below the root are
// accepted (0: only root tokens). Values above MaxChainLinks-1 are capped.
func WithMaxDelegationDepth(n int) VerifierOption {
	return func(v *Verifier) { v.maxDepth = min(max(n, 0), MaxChainLinks-1) }
}

// NewVerifier returns a verifier that accepts tokens whose root link is
// signed by one of trusted.
func NewVerifier(trusted []ed25519.PublicKey, opts ...VerifierOption) *Verifier {
	v := &Verifier{
		skew:     DefaultClockSkew,
		maxDepth: DefaultMaxDelegationDepth,
	}
	v.SetTrusted(trusted)
	for _, o := range opts {
		o(v)
	}
	return v
}

// SetTrusted replaces the trusted root keys. Verifications already under
// way finish against the set they started with; later ones use the new
// set. The caller keeps ownership of trusted (it is copied). Setting the
// same set again (in any order) changes nothing, not even Generation.
func (v *Verifier) SetTrusted(trusted []ed25519.PublicKey) {
	keys := make([]ed25519.PublicKey, 0, len(trusted))
	for _, k := range trusted {
		keys = append(keys, append(ed25519.PublicKey(nil), k...))
	}
	if old := v.trusted.Load(); old != nil && sameKeys(*old, keys) {
		return
	}
	v.trusted.Store(&keys)
	v.gen.Add(1)
}

func sameKeys(a, b []ed25519.PublicKey) bool {
	has := func(set []ed25519.PublicKey, k ed25519.PublicKey) bool {
		for _, x := range set {
			if x.Equal(k) {
				return true
			}
		}
		return false
	}
	for _, k := range a {
		if !has(b, k) {
			return false
		}
	}
	for _, k := range b {
		if !has(a, k) {
			return false
		}
	}
	return true
}

// Generation changes whenever SetTrusted changes the trusted keys. A
// caller that caches verification results keeps the generation it
// verified under and verifies again when it changed, so a key that is no
// longer trusted stops working at once, not when the cached token expires.
func (v *Verifier) Generation() uint64 { return v.gen.Load() }

// Trusted returns a copy of the trusted root keys.
func (v *Verifier) Trusted() []ed25519.PublicKey {
	keys := *v.trusted.Load()
	out := make([]ed25519.PublicKey, 0, len(keys))
	for _, k := range keys {
		out = append(out, append(ed25519.PublicKey(nil), k...))
	}
	return out
}

// Requirement narrows what Verify demands beyond a scope.
type Requirement func(*requirements)

type requirements struct {
	channel    string
	hasChannel bool
	shard      uint16
	hasShard   bool
}

// ForChannel requires the token to allow the named channel: a token bound to
// another channel is refused with ErrWrongBinding; an unbound one passes.
func ForChannel(name string) Requirement {
	return func(r *requirements) { r.channel, r.hasChannel = name, true }
}

// ForShard requires the token to allow the shard.
func ForShard(id uint16) Requirement {
	return func(r *requirements) { r.shard, r.hasShard = id, true }
}

// Verify checks t at time now for the required scope and requirements. It
// returns nil or a *VerifyError whose Reason is one of ErrMalformed,
// ErrDelegationTooDeep, ErrUntrustedIssuer, ErrBadSignature, ErrBrokenChain,
// ErrEscalation, ErrZeroTTL, ErrNotYetValid, ErrExpired, ErrWrongScope or
// ErrWrongBinding (use errors.Is). Every signature is checked before any
// time or scope check, so an unsigned token never learns which of those
// it would have failed.
func (v *Verifier) Verify(t *Token, now time.Time, required Scope, reqs ...Requirement) error {
	if t == nil || len(t.Chain) == 0 {
		return verifyErr(-1, ErrMalformed, "empty token")
	}
	if depth := len(t.Chain) - 1; depth > v.maxDepth {
		return verifyErr(-1, ErrDelegationTooDeep, "%d delegated links, at most %d accepted", depth, v.maxDepth)
	}
	if !v.isTrusted(t.Chain[0].Issuer) {
		return verifyErr(0, ErrUntrustedIssuer, "")
	}
	var parentSig []byte
	for i := range t.Chain {
		l := &t.Chain[i]
		if len(l.Issuer) != ed25519.PublicKeySize || len(l.Subject) != ed25519.PublicKeySize || len(l.Signature) != ed25519.SignatureSize {
			return verifyErr(i, ErrMalformed, "key or signature size")
		}
		if i > 0 && !l.Issuer.Equal(t.Chain[i-1].Subject) {
			return verifyErr(i, ErrBrokenChain, "issuer is not the parent's subject")
		}
		if !ed25519.Verify(l.Issuer, l.signingInput(parentSig), l.Signature) {
			return verifyErr(i, ErrBadSignature, "")
		}
		parentSig = l.Signature
	}
	nowMs := now.UnixMilli()
	skewMs := v.skew.Milliseconds()
	for i := range t.Chain {
		l := &t.Chain[i]
		nb, na := l.NotBefore.UnixMilli(), l.NotAfter.UnixMilli()
		if na <= nb {
			return verifyErr(i, ErrZeroTTL, "window [%d, %d) ms is empty", nb, na)
		}
		if i > 0 {
			p := &t.Chain[i-1]
			switch {
			case p.Delegation == 0 || l.Delegation >= p.Delegation:
				return verifyErr(i, ErrDelegationTooDeep, "parent allows %d, link claims %d", p.Delegation, l.Delegation)
			case !p.Scope.Has(l.Scope):
				return verifyErr(i, ErrEscalation, "scope %v not within %v", l.Scope, p.Scope)
			case p.Channel != "" && l.Channel != p.Channel:
				return verifyErr(i, ErrEscalation, "channel %q, parent bound to %q", l.Channel, p.Channel)
			case p.ShardBound && (!l.ShardBound || l.Shard != p.Shard):
				return verifyErr(i, ErrEscalation, "shard binding wider than parent's")
			case nb < p.NotBefore.UnixMilli() || na > p.NotAfter.UnixMilli():
				return verifyErr(i, ErrEscalation, "window outside parent's")
			}
		}
		if nowMs < nb-skewMs {
			return verifyErr(i, ErrNotYetValid, "valid from %v", l.NotBefore.UTC())
		}
		if nowMs >= na+skewMs {
			return verifyErr(i, ErrExpired, "expired at %v", l.NotAfter.UTC())
		}
	}
	leaf := t.Leaf()
	if !leaf.Scope.Has(required) {
		return verifyErr(len(t.Chain)-1, ErrWrongScope, "have %v, need %v", leaf.Scope, required)
	}
	var r requirements
	for _, o := range reqs {
		o(&r)
	}
	if r.hasChannel && leaf.Channel != "" && leaf.Channel != r.channel {
		return verifyErr(len(t.Chain)-1, ErrWrongBinding, "bound to channel %q, not %q", leaf.Channel, r.channel)
	}
	if r.hasShard && leaf.ShardBound && leaf.Shard != r.shard {
		return verifyErr(len(t.Chain)-1, ErrWrongBinding, "bound to shard %d, not %d", leaf.Shard, r.shard)
	}
	return nil
}

// VerifyHeader parses a header value (EncodeHeader form) and verifies it.
// A value that does not parse is a *VerifyError with Reason ErrMalformed.
func (v *Verifier) VerifyHeader(value string, now time.Time, required Scope, reqs ...Requirement) (*Token, error) {
	t, err := ParseHeader(value)
	if err != nil {
		return nil, &VerifyError{Link: -1, Reason: ErrMalformed, Detail: err.Error()}
	}
	if err := v.Verify(t, now, required, reqs...); err != nil {
		return nil, err
	}
	return t, nil
}

func (v *Verifier) isTrusted(k ed25519.PublicKey) bool {
	for _, t := range *v.trusted.Load() {
		if t.Equal(k) {
			return true
		}
	}
	return false
}
