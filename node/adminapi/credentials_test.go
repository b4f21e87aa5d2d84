package adminapi

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node"
)

// TestCredentialRotationTrustSwitchDrop runs the three pushes of a
// rotation against a real node and checks, after each, which tokens the
// admin API, a data verifier kept in step and the replication verifier
// accept, and which key the node signs with.
func TestCredentialRotationTrustSwitchDrop(t *testing.T) {
	gen := func() *identity.KeyPair {
		k, err := identity.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	op1, op2, cl1, cl2 := gen(), gen(), gen(), gen()
	now := time.Unix(10_000, 0)
	n, err := node.New(node.Options{Name: "a", Now: func() time.Time { return now }, ClusterKey: cl1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	repl := identity.NewVerifier([]ed25519.PublicKey{cl1.PublicKey()})
	s, err := New(Options{Node: n, Verifier: identity.NewVerifier([]ed25519.PublicKey{op1.PublicKey()}), ReplicationVerifier: repl,
		Registry: prometheus.NewRegistry(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	data := identity.NewVerifier(nil)
	s.TrustOperatorIn(data)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	h := &harness{srv: srv, now: now}

	token := func(k *identity.KeyPair, scope identity.Scope) string {
		tok, err := k.TryIssue(identity.Grant{Subject: k.PublicKey(), Scope: scope, TTL: time.Minute}, now)
		if err != nil {
			t.Fatal(err)
		}
		return tok.EncodeHeader()
	}
	put := func(signer *identity.KeyPair, c Credentials) int {
		t.Helper()
		return h.do(t, http.MethodPut, "/v1/credentials", token(signer, identity.ScopeAdmin), c).StatusCode
	}
	accepts := func(v *identity.Verifier, k *identity.KeyPair, scope identity.Scope) bool {
		tok, _ := identity.ParseHeader(token(k, scope))
		err := v.Verify(tok, now, scope)
		if err != nil && !errors.Is(err, identity.ErrUntrustedIssuer) {
			t.Fatalf("unexpected refusal: %v", err)
		}
		return err == nil
	}
	adminOK := func(k *identity.KeyPair) bool {
		return h.do(t, http.MethodGet, "/v1/credentials", token(k, identity.ScopeAdmin), nil).StatusCode == http.StatusOK
	}
	expect := func(step string, op1OK, op2OK, cl1OK, cl2OK bool, signing *identity.KeyPair) {
		t.Helper()
		if adminOK(op1) != op1OK || adminOK(op2) != op2OK {
			t.Fatalf("%s: admin accepts op1=%v op2=%v, want %v %v", step, adminOK(op1), adminOK(op2), op1OK, op2OK)
		}
		if accepts(data, op1, identity.ScopeIngest) != op1OK || accepts(data, op2, identity.ScopeIngest) != op2OK {
			t.Fatalf("%s: the data verifier is not in step with the admin one", step)
		}
		if accepts(repl, cl1, identity.ScopeReplicate) != cl1OK || accepts(repl, cl2, identity.ScopeReplicate) != cl2OK {
			t.Fatalf("%s: replication accepts cl1=%v cl2=%v, want %v %v", step, !cl1OK, !cl2OK, cl1OK, cl2OK)
		}
		if !n.ClusterKey().PublicKey().Equal(signing.PublicKey()) {
			t.Fatalf("%s: node signs with the wrong cluster key", step)
		}
	}
	expect("before", true, false, true, false, cl1)

	both := Credentials{OperatorKeys: [][]byte{op1.PublicKey(), op2.PublicKey()}, ClusterKeys: [][]byte{cl1.PublicKey(), cl2.PublicKey()}}
	if code := put(op1, both); code != http.StatusOK {
		t.Fatalf("trust: %d", code)
	}
	expect("trust", true, true, true, true, cl1)
	if code := put(op1, both); code != http.StatusOK {
		t.Fatalf("trust again (idempotent): %d", code)
	}

	// A signing key sealed under a key the node does not hold, or not
	// trusted, is refused whole.
	stranger := gen()
	sealedByStranger, _ := stranger.Seal(cl2)
	bad := both
	bad.ClusterSigningKey = cl2.PublicKey()
	bad.SealedClusterKey = []SealedKey{{By: stranger.PublicKey(), Box: sealedByStranger}}
	if code := put(op2, bad); code != http.StatusUnprocessableEntity {
		t.Fatalf("switch sealed under an unknown key: %d, want 422", code)
	}
	untrusted := Credentials{OperatorKeys: [][]byte{op2.PublicKey()}, ClusterKeys: [][]byte{cl1.PublicKey()}, ClusterSigningKey: cl2.PublicKey()}
	if code := put(op2, untrusted); code != http.StatusUnprocessableEntity {
		t.Fatalf("switch to an untrusted signing key: %d, want 422", code)
	}
	if code := put(op2, Credentials{ClusterKeys: [][]byte{cl1.PublicKey()}}); code != http.StatusUnprocessableEntity {
		t.Fatalf("no operator key: %d, want 422", code)
	}
	expect("refused pushes", true, true, true, true, cl1)

	sealed, err := cl1.Seal(cl2)
	if err != nil {
		t.Fatal(err)
	}
	sw := both
	sw.ClusterSigningKey = cl2.PublicKey()
	sw.SealedClusterKey = []SealedKey{{By: stranger.PublicKey(), Box: sealedByStranger}, {By: cl1.PublicKey(), Box: sealed}}
	if code := put(op2, sw); code != http.StatusOK {
		t.Fatalf("switch: %d", code)
	}
	expect("switch", true, true, true, true, cl2)

	drop := Credentials{OperatorKeys: [][]byte{op2.PublicKey()}, ClusterKeys: [][]byte{cl2.PublicKey()}, ClusterSigningKey: cl2.PublicKey()}
	if code := put(op2, drop); code != http.StatusOK {
		t.Fatalf("drop: %d", code)
	}
	expect("drop", false, true, false, true, cl2)
	if code := put(op1, both); code != http.StatusUnauthorized {
		t.Fatalf("old operator key after drop: %d, want 401", code)
	}

	var got Credentials
	if err := json.NewDecoder(h.do(t, http.MethodGet, "/v1/credentials", token(op2, identity.ScopeAdmin), nil).Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if len(got.OperatorKeys) != 1 || len(got.ClusterKeys) != 1 || !cl2.PublicKey().Equal(ed25519.PublicKey(got.ClusterSigningKey)) {
		t.Fatalf("GET /v1/credentials = %+v", got)
	}
}
