package dataapi

import (
	"bytes"
	"crypto/ed25519"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
)

// TestCachedTokenRefusedOnceItsKeyIsDropped: a credential rotation that
// drops the operator key a token is rooted at makes the node refuse the
// token at once, although it was verified (and cached) before and has not
// expired.
func TestCachedTokenRefusedOnceItsKeyIsDropped(t *testing.T) {
	oldKey, newKey := mustGen(t), mustGen(t)
	now := time.Now()
	v := identity.NewVerifier([]ed25519.PublicKey{oldKey.PublicKey()}, identity.WithMaxDelegationDepth(1))
	srv := httptest.NewServer(NewServer(Options{Backend: &countingBackend{}, Verifier: v, Now: func() time.Time { return now }}))
	defer srv.Close()
	header := func(k *identity.KeyPair) string {
		creds, err := identity.NewDataCredentials(k, time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := creds.Token(identity.ScopeIngest, time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		return tok.EncodeHeader()
	}
	ingest := func(h string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/ingest", bytes.NewReader([]byte(`{"events":[{"payload":"eA=="}]}`)))
		req.Header.Set(identity.HeaderName, h)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	oldTok, newTok := header(oldKey), header(newKey)
	if code := ingest(oldTok); code != http.StatusOK {
		t.Fatalf("old token before the rotation: %d", code)
	}
	v.SetTrusted([]ed25519.PublicKey{oldKey.PublicKey(), newKey.PublicKey()})
	if a, b := ingest(oldTok), ingest(newTok); a != http.StatusOK || b != http.StatusOK {
		t.Fatalf("grace period: old %d, new %d", a, b)
	}
	v.SetTrusted([]ed25519.PublicKey{newKey.PublicKey()})
	if code := ingest(oldTok); code != http.StatusUnauthorized {
		t.Fatalf("cached old token after the drop: %d, want 401", code)
	}
	if code := ingest(newTok); code != http.StatusOK {
		t.Fatalf("new token after the drop: %d", code)
	}
}

func mustGen(t *testing.T) *identity.KeyPair {
	t.Helper()
	k, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
