// Package adminclient is how the operator talks to nodes: a small
// interface over the admin API (so controller tests can stand a real
// in-process node behind it) and its HTTP implementation, which signs a
// short-lived admin token with the operator's key for every call.
package adminclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/rules"
	"github.com/purplerain/mesh-operator/node"
	"github.com/purplerain/mesh-operator/node/adminapi"
	"github.com/purplerain/mesh-operator/node/topology"
)

// Client is the admin surface of one node.
type Client interface {
	// Status reads the node's status.
	Status(ctx context.Context) (adminapi.Status, error)
	// PutTopology pushes a topology; the same epoch renews the lease. An
	// older epoch than the node holds is an error wrapping
	// topology.ErrStaleEpoch.
	PutTopology(ctx context.Context, t *topology.Topology) error
	// Promote makes the node own shards under t (a standby taking over).
	Promote(ctx context.Context, t *topology.Topology, shards []uint16) error
	// Drain stops the node accepting writes and flushes it.
	Drain(ctx context.Context) (node.DrainStatus, error)
}

// RulesClient replaces and reads a node's behaviour rules. *HTTP
// implements it; it is apart from Client so the orchestration surface
// stays the same.
type RulesClient interface {
	// PutRules makes specs the node's rules (idempotent: unchanged rules
	// keep their rate windows) and returns the hash the node now reports.
	// An invalid set is a *StatusError with status 422 naming the rule.
	PutRules(ctx context.Context, specs []rules.Spec) (adminapi.RulesStatus, error)
	// Rules reads the enforced rules.
	Rules(ctx context.Context) (adminapi.Rules, error)
}

// Dialer returns the client of the node whose admin address is addr.
type Dialer func(addr string) Client

// tokenTTL bounds how long a captured admin token is useful.
const tokenTTL = 30 * time.Second

// HTTP is the admin API over HTTP.
type HTTP struct {
	addr string
	key  *identity.KeyPair
	http *http.Client
	now  func() time.Time
}

// NewHTTP returns the admin client of the node at addr, signing with key.
func NewHTTP(key *identity.KeyPair, hc *http.Client, addr string) *HTTP {
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	return &HTTP{addr: addr, key: key, http: hc, now: time.Now}
}

// NewHTTPDialer returns a Dialer whose clients sign with key.
func NewHTTPDialer(key *identity.KeyPair, hc *http.Client) Dialer {
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	return func(addr string) Client { return &HTTP{addr: addr, key: key, http: hc, now: time.Now} }
}

// StatusError is a non-2xx answer.
type StatusError struct {
	Status  int
	Message string
}

func (e *StatusError) Error() string { return fmt.Sprintf("admin API: %d: %s", e.Status, e.Message) }

// Status implements Client.
func (c *HTTP) Status(ctx context.Context) (adminapi.Status, error) {
	var st adminapi.Status
	err := c.call(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// PutTopology implements Client.
func (c *HTTP) PutTopology(ctx context.Context, t *topology.Topology) error {
	err := c.call(ctx, http.MethodPut, "/v1/topology", t, nil)
	var se *StatusError
	if errors.As(err, &se) && se.Status == http.StatusConflict {
		return fmt.Errorf("%w: %v", topology.ErrStaleEpoch, err)
	}
	return err
}

// Promote implements Client.
func (c *HTTP) Promote(ctx context.Context, t *topology.Topology, shards []uint16) error {
	err := c.call(ctx, http.MethodPost, "/v1/promote", adminapi.PromoteRequest{Topology: *t, Shards: shards}, nil)
	var se *StatusError
	if errors.As(err, &se) && se.Status == http.StatusConflict {
		return fmt.Errorf("%w: %v", topology.ErrStaleEpoch, err)
	}
	return err
}

// Drain implements Client.
func (c *HTTP) Drain(ctx context.Context) (node.DrainStatus, error) {
	var st node.DrainStatus
	err := c.call(ctx, http.MethodPost, "/v1/drain", nil, &st)
	return st, err
}

// Daemons reads the daemon instances the node hosts and their states. It
// is not part of Client: orchestration needs only each shard's daemon
// progress, which Status carries.
func (c *HTTP) Daemons(ctx context.Context) (adminapi.Daemons, error) {
	var d adminapi.Daemons
	err := c.call(ctx, http.MethodGet, "/v1/daemons", nil, &d)
	return d, err
}

// PutRules implements RulesClient.
func (c *HTTP) PutRules(ctx context.Context, specs []rules.Spec) (adminapi.RulesStatus, error) {
	if specs == nil {
		specs = []rules.Spec{} // "null" is not a rule list
	}
	var st adminapi.RulesStatus
	err := c.call(ctx, http.MethodPut, "/v1/rules", specs, &st)
	return st, err
}

// Rules implements RulesClient.
func (c *HTTP) Rules(ctx context.Context) (adminapi.Rules, error) {
	var r adminapi.Rules
	err := c.call(ctx, http.MethodGet, "/v1/rules", nil, &r)
	return r, err
}

func (c *HTTP) call(ctx context.Context, method, path string, in, out any) error {
	tok, err := c.key.TryIssue(identity.Grant{Subject: c.key.PublicKey(), Scope: identity.ScopeAdmin, TTL: tokenTTL}, c.now())
	if err != nil {
		return fmt.Errorf("admin API: sign token: %w", err)
	}
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("admin API: encode %s: %w", path, err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.addr+path, body)
	if err != nil {
		return err
	}
	req.Header.Set(identity.HeaderName, tok.EncodeHeader())
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin API %s %s: %w", method, c.addr, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = string(data)
		}
		return &StatusError{Status: resp.StatusCode, Message: e.Error}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("admin API: decode %s: %w", path, err)
		}
	}
	return nil
}
