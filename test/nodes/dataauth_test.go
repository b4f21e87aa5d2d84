package nodes

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/client"
	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/wireapi"
)

// TestDataAPIRequiresOperatorTokens runs real mesh-node processes with the
// default data-API authentication (no dataAuth section: Token): both
// transports refuse a client without a token or with one the operator key
// did not root, and accept the SDK with the data credentials on both
// transports; nothing a refused request carried is stored.
func TestDataAPIRequiresOperatorTokens(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := newCluster(t, 100, "Leader")
	c.bootstrap()
	a0 := c.member("a0")

	// HTTP without a token, and with a token from a stranger's key.
	stranger, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := stranger.Issue(identity.Grant{Subject: stranger.PublicKey(), Scope: identity.DataScope, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, token string
	}{{"no token", ""}, {"forged token", forged.EncodeHeader()}} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+a0.Data+"/v1/ingest", bytes.NewReader([]byte(`{"events":[{"payload":"cmVmdXNlZA=="}]}`)))
		if tc.token != "" {
			req.Header.Set(identity.HeaderName, tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("HTTP ingest with %s: %d, want 401", tc.name, resp.StatusCode)
		}
	}
	if _, err := client.New(ctx, client.Options{Addresses: []string{a0.Data}}); !errors.Is(err, dataapi.ErrUnauthenticated) {
		t.Fatalf("SDK without credentials learnt the topology: %v", err)
	}

	// Binary: a plaintext connection is refused (the node requires a
	// sealed session); a sealed one without a token is refused typed.
	plain, err := wireapi.Dial(ctx, a0.Wire)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Ingest(ctx, []dataapi.Event{{Payload: []byte("refused")}}); !errors.Is(err, wireapi.ErrConnection) {
		t.Fatalf("plaintext binary ingest: %v, want the connection refused", err)
	}
	_ = plain.Close()
	wc, err := wireapi.DialSealed(ctx, a0.Wire, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = wc.Ingest(ctx, []dataapi.Event{{Payload: []byte("refused")}})
	var re *wireapi.RefusedError
	if !errors.As(err, &re) || !errors.Is(err, dataapi.ErrForbidden) {
		t.Fatalf("binary ingest without a token: %v, want a rejected refusal", err)
	}
	if err := wc.Authenticate(ctx, forged.Encode()); !errors.Is(err, dataapi.ErrForbidden) {
		t.Fatalf("binary auth with a forged token: %v", err)
	}
	_ = wc.Close()

	// The SDK with the credentials, over both transports.
	var sent []string
	for _, tr := range []client.Transport{client.TransportHTTP, client.TransportBinary} {
		cl, err := client.New(ctx, client.Options{Addresses: []string{a0.Data}, Transport: tr, Credentials: c.creds})
		if err != nil {
			t.Fatalf("transport %d: %v", tr, err)
		}
		p := []byte("accepted-" + string(rune('0'+int(tr))))
		if _, err := cl.Ingest(ctx, client.Event{Key: []byte("k"), Payload: p}); err != nil {
			t.Fatalf("transport %d ingest with credentials: %v", tr, err)
		}
		sent = append(sent, string(p))
		_ = cl.Close()
	}
	cl := c.client(ctx)
	defer cl.Close()
	got := map[string]int{}
	pl, err := cl.NewPoller("")
	if err != nil {
		t.Fatal(err)
	}
	for {
		page, err := pl.Poll(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range page.Events {
			got[string(ev.Payload)]++
		}
		if !page.HasMore {
			break
		}
	}
	if len(got) != len(sent) || got[sent[0]] != 1 || got[sent[1]] != 1 {
		t.Fatalf("stored %v, want exactly %v once each (and nothing refused)", got, sent)
	}
}
