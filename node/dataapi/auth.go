package dataapi

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
)

// maxCachedTokens bounds the verified-token cache; past it the cache starts
// over (clients reuse a token for minutes, so a few thousand entries cover
// every live client, and a flood of distinct tokens costs only
// verifications).
const maxCachedTokens = 4096

// grant is what a verified token allows, until when.
type grant struct {
	scope    identity.Scope
	notAfter time.Time
	// gen is the verifier's trust generation it was verified under: a
	// credential rotation that drops a key invalidates the cache.
	gen uint64
}

// tokenCache verifies Mesh-Token header values and remembers the result,
// so a client reusing its token costs a map lookup per request instead of
// the chain's signature checks.
type tokenCache struct {
	v   *identity.Verifier
	now func() time.Time

	mu sync.Mutex
	m  map[string]grant
}

// check says whether header allows scope (0: ingest or consume): 200, or
// 401/403 with the error body.
func (c *tokenCache) check(header string, scope identity.Scope) (int, ErrorResponse) {
	if header == "" {
		return http.StatusUnauthorized, ErrorResponse{Code: CodeUnauthenticated, Error: "authentication required: send a permission token in the " + identity.HeaderName + " header"}
	}
	now := c.now()
	c.mu.Lock()
	g, ok := c.m[header]
	c.mu.Unlock()
	if !ok || !now.Before(g.notAfter) || g.gen != c.v.Generation() {
		var err error
		if g, err = c.verify(header, now); err != nil {
			return http.StatusUnauthorized, ErrorResponse{Code: CodeUnauthenticated, Error: "authentication failed: " + err.Error()}
		}
	}
	if (scope == 0 && g.scope&identity.DataScope == 0) || (scope != 0 && !g.scope.Has(scope)) {
		need := scope
		if need == 0 {
			need = identity.DataScope
		}
		return http.StatusForbidden, ErrorResponse{Code: CodeRejected, Error: fmt.Sprintf("token grants %v, this needs %v", g.scope, need)}
	}
	return http.StatusOK, ErrorResponse{}
}

// verify checks the token for each data scope; a token that fails for
// reasons other than scope is an error.
func (c *tokenCache) verify(header string, now time.Time) (grant, error) {
	t, err := identity.ParseHeader(header)
	if err != nil {
		return grant{}, err
	}
	g := grant{gen: c.v.Generation()} // read before verifying: a change during it re-verifies
	for _, sc := range []identity.Scope{identity.ScopeIngest, identity.ScopeConsume} {
		err := c.v.Verify(t, now, sc)
		switch {
		case err == nil:
			g.scope |= sc
		case errors.Is(err, identity.ErrWrongScope):
		default:
			return grant{}, err
		}
	}
	g.notAfter = t.NotAfter()
	c.mu.Lock()
	if len(c.m) >= maxCachedTokens {
		clear(c.m)
	}
	c.m[header] = g
	c.mu.Unlock()
	return g, nil
}
