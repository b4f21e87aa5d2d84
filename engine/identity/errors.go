package identity

import (
	"errors"
	"fmt"
)

// Sentinel errors for issuing and verifying tokens. Callers branch on them
// with errors.Is; Verify wraps them in a *VerifyError that also names the
// chain link at fault.
var (
	// ErrZeroTTL: a token was requested (TryIssue) or presented (Verify)
	// with an empty validity window; it would be born expired.
	ErrZeroTTL = errors.New("identity: token TTL is zero")
	// ErrNegativeTTL: a token was requested with a negative TTL.
	ErrNegativeTTL = errors.New("identity: token TTL is negative")
	// ErrEmptyScope: a token was requested with no scope bits.
	ErrEmptyScope = errors.New("identity: token scope is empty")

	ErrExpired           = errors.New("identity: token expired")
	ErrNotYetValid       = errors.New("identity: token not yet valid")
	ErrBadSignature      = errors.New("identity: token signature invalid")
	ErrWrongScope        = errors.New("identity: token lacks required scope")
	ErrWrongBinding      = errors.New("identity: token is bound to another channel or shard")
	ErrDelegationTooDeep = errors.New("identity: token delegation too deep")
	ErrUntrustedIssuer   = errors.New("identity: token root issuer is not trusted")
	// ErrBrokenChain: a delegated link is not issued by its parent's subject.
	ErrBrokenChain = errors.New("identity: token delegation chain broken")
	// ErrEscalation: a delegated link grants more than its parent (scope,
	// binding or time window).
	ErrEscalation = errors.New("identity: delegated token exceeds its parent")
	// ErrNotSubject: Delegate was called with a key that is not the
	// parent token's subject.
	ErrNotSubject = errors.New("identity: key is not the token's subject")
	// ErrMalformed: the encoded token could not be parsed.
	ErrMalformed = errors.New("identity: malformed token")
)

// VerifyError is the error Verify returns: the reason (one of the sentinel
// errors above, reachable with errors.Is) and the index of the chain link
// it concerns (0 is the root, -1 when it concerns the whole token).
type VerifyError struct {
	Link   int
	Reason error
	Detail string
}

func (e *VerifyError) Error() string {
	msg := e.Reason.Error()
	if e.Link >= 0 {
		msg = fmt.Sprintf("%s (link %d)", msg, e.Link)
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

func (e *VerifyError) Unwrap() error { return e.Reason }

func verifyErr(link int, reason error, format string, args ...any) *VerifyError {
	return &VerifyError{Link: link, Reason: reason, Detail: fmt.Sprintf(format, args...)}
}
