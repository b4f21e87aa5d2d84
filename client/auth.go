package client

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node/wireapi"
)

// DefaultTokenTTL is how long the tokens the SDK delegates itself from
// Options.Credentials live; it renews them at half that age.
const DefaultTokenTTL = 10 * time.Minute

// tokenSource hands out the token the client presents: a fixed one
// (Options.Token) or one it delegates itself from data credentials and
// renews before it expires.
type tokenSource struct {
	creds *identity.DataCredentials
	ttl   time.Duration

	mu      sync.Mutex
	raw     []byte // identity binary form (binary transport)
	header  string // EncodeHeader form (HTTP)
	renewAt time.Time
}

func newTokenSource(o Options) (*tokenSource, error) {
	static := o.Token
	if static == nil {
		static = o.WireToken
	}
	if o.Credentials != nil && static != nil {
		return nil, errors.New("client: set Token or Credentials, not both")
	}
	ts := &tokenSource{creds: o.Credentials, ttl: o.TokenTTL}
	if ts.ttl <= 0 {
		ts.ttl = DefaultTokenTTL
	}
	switch {
	case static != nil:
		tok, err := identity.ParseToken(static)
		if err != nil {
			return nil, fmt.Errorf("client: Options.Token: %w", err)
		}
		ts.raw, ts.header = static, tok.EncodeHeader()
	case o.Credentials != nil:
		if _, _, err := ts.get(); err != nil {
			return nil, err
		}
	default:
		return nil, nil
	}
	return ts, nil
}

// get returns the current token in both forms, renewing a delegated one at
// half its life. A nil source means no authentication.
func (ts *tokenSource) get() (raw []byte, header string, err error) {
	if ts == nil {
		return nil, "", nil
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.creds != nil && (ts.raw == nil || !time.Now().Before(ts.renewAt)) {
		now := time.Now()
		tok, err := ts.creds.Token(identity.DataScope, ts.ttl, now)
		if err != nil {
			return nil, "", fmt.Errorf("client: delegate a data token: %w", err)
		}
		ts.raw, ts.header = tok.Encode(), tok.EncodeHeader()
		ts.renewAt = now.Add(tok.NotAfter().Sub(now) / 2)
	}
	return ts.raw, ts.header, nil
}

// authConn makes sure wc presents the current token: once after dialing,
// and again whenever the source renewed it.
func (c *Client) authConn(wc *wireapi.Conn, raw []byte, present func([]byte) error) error {
	if raw == nil {
		return nil
	}
	c.wmu.Lock()
	cur := c.wauth[wc]
	c.wmu.Unlock()
	if cur != nil && &cur[0] == &raw[0] {
		return nil
	}
	if err := present(raw); err != nil {
		return err
	}
	c.wmu.Lock()
	c.wauth[wc] = raw
	c.wmu.Unlock()
	return nil
}
