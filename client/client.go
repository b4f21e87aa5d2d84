// Package client is the Go SDK for mesh clusters: it learns the topology
// from any node, routes keyed events to their shard's owner, retries when a
// shard moves or a node answers "not owner", and polls every owner with one
// composite cursor.
//
// Routing: a keyed event goes to the owner of its base shard (package
// topology's KeyShard; shards added by autoscaling never take keys, so
// per-key order holds). Keyless events are spread round-robin over the
// owners of the shards that take new events, once per such shard, so an
// owner of more routable shards gets more of them; a draining shard's owner
// gets none for it. Every owner, draining shards included, is polled.
//
// Topology age: the topology is refreshed before a write is routed when
// it is older than Options.TopologyMaxAge (1 s), so keyless events reach
// shards added on members the client does not write to without waiting
// for a refused write; there is no background refresher. Concurrent
// writes share one refresh in flight, at most one is started per
// TopologyMaxAge, and a failed one keeps the old topology.
//
// Retries: a refused write (421 not owner, 503 moving, lease expired, no
// topology, backpressure) is retried with jittered exponential backoff
// after refreshing the topology, until the context ends. A behaviour-rule
// refusal (rule_rejected) is not retried: it is returned at once, and
// errors.As with a *RuleRejectedError names the rule. A write whose
// outcome is unknown (the connection broke after the request was sent) is
// also retried, so a retried event may be stored twice; events carry
// whatever id the application needs to de-duplicate. Every event the SDK
// reports as acknowledged was acknowledged by its shard's owner.
//
// Transport: ingest and poll go over the HTTP/JSON data API by default, or
// over the binary data API on each member's wire port (package
// node/wireapi) with Options.Transport = TransportBinary: one pipelined
// connection per member, shared by concurrent callers, with the same
// routing, refusals and retries. With TransportBinary the topology is
// learnt over the wire ports too (Options.WireAddresses, then the
// members' wire addresses), so a binary-only client needs no HTTP;
// Options.Addresses are asked over HTTP.
//
// Authentication: nodes require data-API tokens unless their
// configuration says dataAuth mode None. Give Options.Credentials (the
// cluster's <name>-data-key Secret, identity.DataCredentialsFromSecretData):
// the client delegates itself short-lived tokens and renews them, sending
// them in the Mesh-Token header over HTTP and presenting them on each
// binary connection (again after a renewal). Options.Token is a fixed
// token instead. A refused token is not retried: the error unwraps to
// dataapi.ErrUnauthenticated (401) or dataapi.ErrForbidden (403).
//
// Sealing: binary connections start with a wire session handshake and
// every packet is sealed (nodes the operator runs require it). The node
// must sign the handshake with a pinned key: Options.ServerKeys, or by
// default the server keys Options.Credentials carry (the data Secret names
// the cluster key, both keys during a credential rotation), so a node, or a
// man in the middle, signing with another key is refused (wire.ErrHandshake)
// before the client sends its token or an event. Ingest and Poll return
// that refusal at once, unretried like a refused token: dialling again
// meets the same key (a handshake the connection broke off is retried
// like any connection failure). A long-lived client must
// load the Secret again (a new Client) within a rotation's grace period:
// it pins the keys it was given. Options.Plaintext turns sealing off for
// nodes that allow it. HTTP/JSON traffic is neither sealed nor pinned.
package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/refusal"
	"github.com/purplerain/mesh-operator/node/topology"
	"github.com/purplerain/mesh-operator/node/wireapi"
)

// Options configures a Client.
type Options struct {
	// Addresses are data API addresses (host:port) to learn the topology
	// from over HTTP; any live node will do.
	Addresses []string
	// WireAddresses are wire-port addresses to learn the topology from
	// over the binary protocol (TransportBinary only): a binary-only
	// client gives these and no Addresses.
	WireAddresses []string
	// HTTPClient defaults to a client with a 30 s timeout.
	HTTPClient *http.Client
	// RetryBase and RetryMax bound the backoff between retries (defaults
	// 20 ms and 1 s).
	RetryBase, RetryMax time.Duration
	// Transport carries ingest and poll: TransportHTTP (the default) or
	// TransportBinary.
	Transport Transport
	// Token, if set, is a data-API permission token (identity binary
	// form) sent with every HTTP request (Mesh-Token header) and presented
	// on every binary connection before its first request.
	Token []byte
	// WireToken is the former name of Token (same effect, both
	// transports); set one of them.
	WireToken []byte
	// Credentials, if set (instead of Token), are the cluster's data key
	// and the operator's grant to it (the <cluster>-data-key Secret, see
	// identity.DataCredentialsFromSecretData): the client delegates itself
	// tokens of TokenTTL (default DefaultTokenTTL) and renews them at half
	// their life.
	Credentials *identity.DataCredentials
	TokenTTL    time.Duration
	// Plaintext turns off sealing on binary connections. By default each
	// starts with a wire session handshake and every packet is sealed
	// (node/wireapi DialSealed); nodes the operator runs require it.
	Plaintext bool
	// ServerKeys, if set, are the keys a node must sign its session
	// handshake with (the cluster key's public half). When it is nil and
	// Credentials name server keys (the data Secret's server-keys entry,
	// which the operator keeps current through a credential rotation),
	// those are pinned; an empty non-nil ServerKeys pins nothing. Without
	// pinned keys a sealed session resists passive observers but not a
	// man in the middle.
	ServerKeys []ed25519.PublicKey
	// TopologyMaxAge is how old the topology may be (default 1 s;
	// negative: no age limit). Ingest refreshes an older one before
	// routing a write (one refresh in flight, shared by concurrent
	// writes, at most one started per TopologyMaxAge; a failed one keeps
	// the old topology and the write proceeds), and a poll that finds
	// every polled owner caught up refreshes it. Writes and polls succeed
	// against a stale topology, so without it an ingest-only client would
	// never send keyless events to a shard added by autoscaling on a
	// member it does not write to (and autoscaling could drain it as
	// idle), and a poller would never read a shard added on, or moved or
	// promoted to, a member it does not poll.
	TopologyMaxAge time.Duration
	// OnBinarySend, if set, is called with each batch of events just
	// before it is written to a binary connection (TransportBinary),
	// resends included, so tests can tell an SDK resend from a duplicate
	// (clienttest.SendCounter.Count; HTTP sends are seen by an
	// http.RoundTripper). It must not block or keep the slice.
	OnBinarySend func(events []Event)
}

// Transport selects how ingest and poll reach the nodes.
type Transport int

const (
	// TransportHTTP uses the HTTP/JSON data API (member.Data).
	TransportHTTP Transport = iota
	// TransportBinary uses the binary data API on the wire port
	// (member.Wire).
	TransportBinary
)

// Client talks to a mesh cluster's data API. It is safe for concurrent use.
type Client struct {
	opts Options
	http *http.Client

	mu   sync.RWMutex
	topo *topology.Topology
	rr   int
	// refreshed is when a Refresh last learnt a topology.
	refreshed time.Time

	// Write-path refreshes (refreshIfStale): at most one in flight,
	// shared by every caller that finds the topology stale meanwhile, and
	// at most one started per TopologyMaxAge.
	rmu          sync.Mutex
	rcall        *refreshCall // the refresh in flight, nil: none
	refreshTried time.Time    // when the last one started

	tokens *tokenSource // nil: no authentication

	wmu    sync.Mutex
	wconns map[string]*wireapi.Conn // by wire address (TransportBinary)
	wauth  map[*wireapi.Conn][]byte // the token each connection presented
}

// New returns a client and learns the topology from one of the addresses.
func New(ctx context.Context, opts Options) (*Client, error) {
	if len(opts.Addresses) == 0 && (len(opts.WireAddresses) == 0 || opts.Transport != TransportBinary) {
		return nil, errors.New("client: at least one address is required (WireAddresses only with TransportBinary)")
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if opts.RetryBase <= 0 {
		opts.RetryBase = 20 * time.Millisecond
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = time.Second
	}
	if opts.TopologyMaxAge == 0 {
		opts.TopologyMaxAge = time.Second
	}
	if opts.ServerKeys == nil && opts.Credentials != nil && len(opts.Credentials.ServerKeys) > 0 {
		// Pin node keys by default: whoever holds the data Secret learns
		// which keys the nodes sign with from the same Secret.
		opts.ServerKeys = opts.Credentials.ServerKeys
	}
	tokens, err := newTokenSource(opts)
	if err != nil {
		return nil, err
	}
	c := &Client{opts: opts, http: opts.HTTPClient, tokens: tokens, wconns: map[string]*wireapi.Conn{}, wauth: map[*wireapi.Conn][]byte{}}
	if err := c.Refresh(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Topology returns the topology the client currently routes by.
func (c *Client) Topology() *topology.Topology {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.topo
}

// refreshTimeout bounds each node's answer during Refresh, so a dead
// member costs little.
const refreshTimeout = 2 * time.Second

// Refresh re-learns the topology from the known members, then from the
// configured addresses, keeping the newest epoch seen. With
// TransportBinary it asks members on their wire ports (and
// Options.WireAddresses), so a binary-only client never needs HTTP;
// Options.Addresses are asked over HTTP.
func (c *Client) Refresh(ctx context.Context) error {
	var candidates []string
	binary := c.opts.Transport == TransportBinary
	overWire := map[string]bool{}
	if t := c.Topology(); t != nil {
		for _, m := range t.Members {
			if binary && m.Wire != "" {
				candidates = append(candidates, m.Wire)
				overWire[m.Wire] = true
			} else {
				candidates = append(candidates, m.Data)
			}
		}
	}
	if binary {
		for _, a := range c.opts.WireAddresses {
			candidates = append(candidates, a)
			overWire[a] = true
		}
	}
	candidates = append(candidates, c.opts.Addresses...)
	// Ask every candidate and keep the newest epoch: the first node to
	// answer may be cut off from the operator and hold an old topology.
	var errs []error
	var best *topology.Topology
	seen := map[string]bool{}
	for _, addr := range candidates {
		if seen[addr] {
			continue
		}
		seen[addr] = true
		var t topology.Topology
		rctx, cancel := context.WithTimeout(ctx, refreshTimeout)
		var err error
		if overWire[addr] {
			err = c.wireTopology(rctx, addr, &t)
		} else {
			err = c.get(rctx, addr, "/v1/topology", &t)
		}
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if best == nil || t.Epoch > best.Epoch {
			best = &t
		}
	}
	if best == nil {
		return fmt.Errorf("client: no node answered with a topology: %w", errors.Join(errs...))
	}
	c.mu.Lock()
	if c.topo == nil || best.Epoch >= c.topo.Epoch {
		c.topo = best
	}
	c.refreshed = time.Now()
	c.mu.Unlock()
	return nil
}

// topologyOlderThan says the last successful Refresh was more than d ago.
func (c *Client) topologyOlderThan(d time.Duration) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return time.Since(c.refreshed) > d
}

// refreshCall is a write-path refresh in flight.
type refreshCall struct {
	done    chan struct{} // closed when it ended
	waiters int           // callers that joined it (tests look)
}

// refreshIfStale refreshes a topology older than Options.TopologyMaxAge
// before a write is routed, so a client that only ingests learns shards
// added (or moved) on members it does not write to without waiting for a
// refusal. Callers that find a refresh in flight wait for it (or their
// context) instead of starting another; a refresh is started at most once
// per TopologyMaxAge, failed ones included, so a dead topology endpoint
// costs heavy load nothing more. A failed refresh keeps the old topology
// and the write proceeds.
func (c *Client) refreshIfStale(ctx context.Context) {
	maxAge := c.opts.TopologyMaxAge
	if maxAge <= 0 || !c.topologyOlderThan(maxAge) {
		return
	}
	c.rmu.Lock()
	if call := c.rcall; call != nil {
		call.waiters++
		c.rmu.Unlock()
		select {
		case <-call.done:
		case <-ctx.Done():
		}
		return
	}
	now := time.Now()
	if now.Sub(c.refreshTried) <= maxAge || !c.topologyOlderThan(maxAge) {
		// Tried within maxAge (and failed), or another caller's refresh
		// ended since the first look.
		c.rmu.Unlock()
		return
	}
	call := &refreshCall{done: make(chan struct{})}
	c.rcall, c.refreshTried = call, now
	c.rmu.Unlock()
	defer func() {
		c.rmu.Lock()
		c.rcall = nil
		c.rmu.Unlock()
		close(call.done)
	}()
	_ = c.Refresh(ctx) // a failed refresh keeps the old topology
}

// Event is one event to ingest.
type Event = dataapi.Event

// Ingest sends events, keyed ones to their shard's owner and keyless ones
// to any active owner, and returns once every event was acknowledged (one
// ack per event, in order) or the context ended.
func (c *Client) Ingest(ctx context.Context, events ...Event) ([]dataapi.Ack, error) {
	acks := make([]dataapi.Ack, len(events))
	pending := make([]int, len(events))
	for i := range pending {
		pending[i] = i
	}
	for attempt := 0; ; attempt++ {
		c.refreshIfStale(ctx)
		groups, err := c.route(events, pending)
		if err != nil {
			return nil, err
		}
		var retry []int
		var lastErr error
		for addr, idx := range groups {
			batch := make([]Event, len(idx))
			for j, i := range idx {
				batch[j] = events[i]
			}
			var resp dataapi.IngestResponse
			var err error
			if c.opts.Transport == TransportBinary {
				resp.Acks, err = c.ingestBinary(ctx, addr, batch)
			} else {
				err = c.post(ctx, addr, "/v1/ingest", dataapi.IngestRequest{Events: batch}, &resp)
			}
			if err != nil {
				if !retriable(err) {
					return nil, err
				}
				lastErr = err
				retry = append(retry, idx...)
				continue
			}
			if len(resp.Acks) != len(idx) {
				return nil, fmt.Errorf("client: %s acknowledged %d of %d events", addr, len(resp.Acks), len(idx))
			}
			for j, i := range idx {
				acks[i] = resp.Acks[j]
			}
		}
		if len(retry) == 0 {
			return acks, nil
		}
		pending = retry
		if err := c.backoff(ctx, attempt, lastErr); err != nil {
			return nil, err
		}
	}
}

// route groups pending events by the data address they go to.
func (c *Client) route(events []Event, pending []int) (map[string][]int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.topo
	groups := map[string][]int{}
	var owners []string
	for _, s := range t.Shards {
		if s.Draining {
			continue // no new keyless events: it is being retired
		}
		if m, ok := t.Member(s.Owner); ok {
			owners = append(owners, m.Data)
		}
	}
	if len(owners) == 0 {
		return nil, errors.New("client: the topology has no owner to write to")
	}
	for _, i := range pending {
		var addr string
		if len(events[i].Key) > 0 {
			s, ok := t.Shard(topology.KeyShard(events[i].Key, t.BaseShards))
			m, found := t.Member(s.Owner)
			if !ok || !found {
				return nil, fmt.Errorf("client: no owner for the shard of key %q", events[i].Key)
			}
			addr = m.Data
		} else {
			addr = owners[c.rr%len(owners)]
			c.rr++
		}
		groups[addr] = append(groups[addr], i)
	}
	return groups, nil
}

// backoff waits before retry attempt+1 and refreshes the topology.
func (c *Client) backoff(ctx context.Context, attempt int, cause error) error {
	d := c.opts.RetryBase << min(attempt, 16)
	if d > c.opts.RetryMax || d <= 0 {
		d = c.opts.RetryMax
	}
	d = d/2 + rand.N(d/2+1)
	select {
	case <-ctx.Done():
		return fmt.Errorf("client: gave up after %d attempts: %w (last error: %w)", attempt+1, ctx.Err(), cause)
	case <-time.After(d):
	}
	_ = c.Refresh(ctx) // a failed refresh keeps the old topology; the next attempt tells
	return nil
}

// Error is a refusal from a node.
type Error struct {
	Status int
	dataapi.ErrorResponse
}

func (e *Error) Error() string {
	return fmt.Sprintf("client: %d %s: %s", e.Status, e.Code, e.ErrorResponse.Error)
}

// Unwrap exposes a rule refusal as a *RuleRejectedError, so callers branch
// with errors.As, and authentication refusals as dataapi.ErrUnauthenticated
// (401) or dataapi.ErrForbidden (403).
func (e *Error) Unwrap() error {
	switch e.Code {
	case dataapi.CodeRuleRejected:
		return &RuleRejectedError{Rule: e.Rule, Rules: e.Rules, RateLimited: e.RateLimited}
	case dataapi.CodeUnauthenticated:
		return dataapi.ErrUnauthenticated
	case dataapi.CodeRejected:
		return dataapi.ErrForbidden
	}
	return nil
}

// RuleRejectedError is a node's behaviour-rule refusal of an ingest: it
// names the failing rule. The SDK does not retry it.
type RuleRejectedError = refusal.RuleRejectedError

// retriable says whether a failed request may succeed if sent again
// (possibly elsewhere after a topology refresh).
func retriable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		switch e.Code {
		case dataapi.CodeNotOwner, dataapi.CodeShardMoving, dataapi.CodeLeaseExpired, dataapi.CodeNoTopology, dataapi.CodeBackpressure:
			return true
		}
		return false
	}
	if errors.Is(err, wireapi.ErrConnection) {
		return true // binary transport: node down or connection broken
	}
	var ue *url.Error
	return errors.As(err, &ue) // transport error: node down or connection broken
}

func (c *Client) post(ctx context.Context, addr, path string, body, out any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("client: encode request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.do(req, out)
}

func (c *Client) get(ctx context.Context, addr, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return err
	}
	return c.do(req, out)
}

func (c *Client) do(req *http.Request, out any) error {
	_, header, err := c.tokens.get()
	if err != nil {
		return err
	}
	if header != "" {
		req.Header.Set(identity.HeaderName, header)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return &url.Error{Op: req.Method, URL: req.URL.String(), Err: err}
	}
	if resp.StatusCode != http.StatusOK {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(body, &e.ErrorResponse) != nil || e.Code == "" {
			e.Code, e.ErrorResponse.Error = dataapi.CodeInternal, string(body)
		}
		return e
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("client: decode %s answer: %w", req.URL.Path, err)
	}
	return nil
}

// pollPage fetches one page from the node at addr.
func (c *Client) pollPage(ctx context.Context, addr, cursor string, limit int) (dataapi.PollResponse, error) {
	if c.opts.Transport == TransportBinary {
		return c.pollBinary(ctx, addr, cursor, limit)
	}
	var out dataapi.PollResponse
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	err := c.get(ctx, addr, "/v1/poll?"+q.Encode(), &out)
	return out, err
}
