package dataapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node/topology"
)

// countingBackend records what reached it.
type countingBackend struct{ ingested, polled atomic.Int64 }

func (b *countingBackend) Topology() *topology.Topology { return &topology.Topology{Epoch: 1} }
func (b *countingBackend) Ingest(_ context.Context, ev []Event) ([]Ack, error) {
	b.ingested.Add(int64(len(ev)))
	return make([]Ack, len(ev)), nil
}
func (b *countingBackend) Poll(context.Context, PollRequest) (PollResponse, error) {
	b.polled.Add(1)
	return PollResponse{}, nil
}

func TestHTTPDataAPIRequiresTokens(t *testing.T) {
	op, _ := identity.Generate(nil)
	stranger, _ := identity.Generate(nil)
	now := time.Unix(1_800_000_000, 0)
	var clock atomic.Int64
	clock.Store(now.Unix())
	be := &countingBackend{}
	srv := httptest.NewServer(NewServer(Options{
		Backend:  be,
		Verifier: identity.NewVerifier([]ed25519.PublicKey{op.PublicKey()}, identity.WithMaxDelegationDepth(1)),
		Now:      func() time.Time { return time.Unix(clock.Load(), 0) },
	}))
	defer srv.Close()
	creds, err := identity.NewDataCredentials(op, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	tok := func(issuer *identity.KeyPair, scope identity.Scope, ttl time.Duration) string {
		t.Helper()
		tk, err := issuer.Issue(identity.Grant{Subject: stranger.PublicKey(), Scope: scope, TTL: ttl}, now)
		if err != nil {
			t.Fatal(err)
		}
		return tk.EncodeHeader()
	}
	delegated, err := creds.Token(identity.ScopeIngest, time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, path, token string) int {
		t.Helper()
		var body *bytes.Reader
		if method == http.MethodPost {
			body = bytes.NewReader([]byte(`{"events":[{"payload":"eA=="}]}`))
		} else {
			body = bytes.NewReader(nil)
		}
		req, _ := http.NewRequest(method, srv.URL+path, body)
		if token != "" {
			req.Header.Set(identity.HeaderName, token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") != identity.HeaderName {
			t.Fatalf("401 without WWW-Authenticate")
		}
		return resp.StatusCode
	}
	cases := []struct {
		name, method, path, token string
		want                      int
	}{
		{"ingest without a token", http.MethodPost, "/v1/ingest", "", 401},
		{"poll without a token", http.MethodGet, "/v1/poll", "", 401},
		{"topology without a token", http.MethodGet, "/v1/topology", "", 401},
		{"garbage token", http.MethodPost, "/v1/ingest", "not-a-token", 401},
		{"untrusted issuer", http.MethodPost, "/v1/ingest", tok(stranger, identity.ScopeIngest, time.Hour), 401},
		{"admin-only token", http.MethodPost, "/v1/ingest", tok(op, identity.ScopeAdmin, time.Hour), 403},
		{"consume token cannot ingest", http.MethodPost, "/v1/ingest", tok(op, identity.ScopeConsume, time.Hour), 403},
		{"ingest token cannot poll", http.MethodGet, "/v1/poll", delegated.EncodeHeader(), 403},
	}
	for _, tc := range cases {
		if got := do(tc.method, tc.path, tc.token); got != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, got, tc.want)
		}
	}
	if n, p := be.ingested.Load(), be.polled.Load(); n != 0 || p != 0 {
		t.Fatalf("refused requests reached the backend: %d ingested, %d polls", n, p)
	}
	if got := do(http.MethodPost, "/v1/ingest", delegated.EncodeHeader()); got != 200 {
		t.Fatalf("delegated ingest token: %d", got)
	}
	if got := do(http.MethodGet, "/v1/topology", delegated.EncodeHeader()); got != 200 {
		t.Fatalf("topology with an ingest token: %d", got)
	}
	if got := do(http.MethodGet, "/v1/poll", tok(op, identity.ScopeConsume, time.Hour)); got != 200 {
		t.Fatalf("poll with a consume token: %d", got)
	}
	// Past the delegated token's minute (and the skew), the cached grant
	// no longer counts.
	clock.Store(now.Add(2 * time.Minute).Unix())
	if got := do(http.MethodPost, "/v1/ingest", delegated.EncodeHeader()); got != 401 {
		t.Fatalf("expired token: %d, want 401", got)
	}
	if n := be.ingested.Load(); n != 1 {
		t.Fatalf("backend ingested %d events, want exactly the one accepted", n)
	}
}
