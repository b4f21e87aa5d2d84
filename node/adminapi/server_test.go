package adminapi

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/topology"
)

type harness struct {
	srv      *httptest.Server
	operator *identity.KeyPair
	node     *node.Node
	now      time.Time
}

func newHarness(t *testing.T) *harness { t.Helper(); return newHarnessConfig(t, nil) }

// newHarnessConfig is newHarness with the node configured by cfg.
func newHarnessConfig(t *testing.T, cfg *nodeconfig.Config) *harness {
	t.Helper()
	op, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{operator: op, now: time.Unix(10_000, 0)}
	clock := func() time.Time { return h.now }
	h.node, err = node.New(node.Options{Name: "a", Now: clock, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.node.Close() })
	s, err := New(Options{
		Node:     h.node,
		Verifier: identity.NewVerifier([]ed25519.PublicKey{op.PublicKey()}),
		Registry: prometheus.NewRegistry(),
		Now:      clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = httptest.NewServer(s)
	t.Cleanup(h.srv.Close)
	return h
}

func (h *harness) token(t *testing.T, scope identity.Scope, ttl time.Duration) string {
	t.Helper()
	tok, err := h.operator.TryIssue(identity.Grant{Subject: h.operator.PublicKey(), Scope: scope, TTL: ttl}, h.now)
	if err != nil {
		t.Fatal(err)
	}
	return tok.EncodeHeader()
}

func (h *harness) do(t *testing.T, method, path, token string, body any) *http.Response {
	t.Helper()
	var buf bytes.Buffer
	if body != nil {
		if err := json.NewEncoder(&buf).Encode(body); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, h.srv.URL+path, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set(identity.HeaderName, token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func topo(epoch uint64) *topology.Topology {
	return &topology.Topology{
		Cluster: "demo", Epoch: epoch, LeaseMillis: 2000, BaseShards: 1,
		Members: []topology.Member{{Name: "a", Role: topology.Active}},
		Shards:  []topology.Shard{{ID: 0, Owner: "a"}},
	}
}

func TestUnauthenticatedOrExpiredCallsChangeNothing(t *testing.T) {
	h := newHarness(t)
	stranger, _ := identity.Generate(nil)
	strangerTok, _ := stranger.TryIssue(identity.Grant{Subject: stranger.PublicKey(), Scope: identity.ScopeAdmin, TTL: time.Minute}, h.now)
	expired := h.token(t, identity.ScopeAdmin, time.Second)

	cases := map[string]struct {
		token string
		want  int
	}{
		"no token":              {"", http.StatusUnauthorized},
		"garbage token":         {"not-a-token", http.StatusUnauthorized},
		"untrusted signer":      {strangerTok.EncodeHeader(), http.StatusUnauthorized},
		"wrong scope (ingest)":  {h.token(t, identity.ScopeIngest, time.Minute), http.StatusForbidden},
		"expired (after 1 min)": {expired, http.StatusUnauthorized},
	}
	h.now = h.now.Add(time.Minute) // the 1s token is long expired, skew included
	for name, tc := range cases {
		if name != "expired (after 1 min)" && tc.token != "" && tc.token != "not-a-token" && tc.token != strangerTok.EncodeHeader() {
			// Re-issue scope tokens at the new time so only the scope is wrong.
			tc.token = h.token(t, identity.ScopeIngest, time.Minute)
		}
		t.Run(name, func(t *testing.T) {
			resp := h.do(t, http.MethodPut, "/v1/topology", tc.token, topo(1))
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if h.node.Topology() != nil {
				t.Fatal("a refused call changed the node's topology")
			}
		})
	}
}

func TestTopologyPushRenewsAndRefusesOlderEpochs(t *testing.T) {
	h := newHarness(t)
	tok := h.token(t, identity.ScopeAdmin, time.Minute)
	if resp := h.do(t, http.MethodGet, "/readyz", "", nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz before topology: %d", resp.StatusCode)
	}
	if resp := h.do(t, http.MethodPut, "/v1/topology", tok, topo(2)); resp.StatusCode != http.StatusOK {
		t.Fatalf("push epoch 2: %d", resp.StatusCode)
	}
	if resp := h.do(t, http.MethodGet, "/readyz", "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz after topology: %d", resp.StatusCode)
	}
	if resp := h.do(t, http.MethodPut, "/v1/topology", tok, topo(1)); resp.StatusCode != http.StatusConflict {
		t.Fatalf("push older epoch: %d, want 409", resp.StatusCode)
	}
	bad := topo(3)
	bad.Shards[0].Owner = "ghost"
	if resp := h.do(t, http.MethodPut, "/v1/topology", tok, bad); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("push invalid topology: %d, want 422", resp.StatusCode)
	}

	resp := h.do(t, http.MethodGet, "/v1/status", tok, nil)
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Epoch != 2 || !st.Ready || st.Role != topology.Active || len(st.Owned) != 1 || st.LeaseRemainingMillis != 2000 {
		t.Fatalf("status = %+v", st)
	}

	h.now = h.now.Add(3 * time.Second)
	if resp := h.do(t, http.MethodGet, "/readyz", "", nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz after lease expiry: %d", resp.StatusCode)
	}
}

func TestProbesAndMetricsAreOpen(t *testing.T) {
	h := newHarness(t)
	for _, p := range []string{"/healthz", "/metrics"} {
		if resp := h.do(t, http.MethodGet, p, "", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", p, resp.StatusCode)
		}
	}
}
