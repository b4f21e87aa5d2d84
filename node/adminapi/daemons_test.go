package adminapi

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/dataapi"
)

// TestDaemonsEndpointNeedsATokenAndShowsState: GET /v1/daemons is refused
// without an admin token and otherwise lists each hosted daemon with its
// role, through-seq and state.
func TestDaemonsEndpointNeedsATokenAndShowsState(t *testing.T) {
	h := newHarnessConfig(t, &nodeconfig.Config{Storage: nodeconfig.Storage{Mode: "Memory"},
		Daemons: []nodeconfig.Daemon{{Name: "visits", Kind: "counter", Config: map[string]string{"keyField": "user"}}}})
	if err := h.node.ApplyTopology(topo(1)); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"ann", "bob", "ann"} {
		if _, err := h.node.Ingest(context.Background(), []dataapi.Event{{Payload: []byte(`{"user":"` + user + `"}`)}}); err != nil {
			t.Fatal(err)
		}
	}
	if resp := h.do(t, http.MethodGet, "/v1/daemons", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: status %d, want 401", resp.StatusCode)
	}
	if resp := h.do(t, http.MethodGet, "/v1/daemons", h.token(t, identity.ScopeIngest, time.Minute), nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("ingest token: status %d, want 403", resp.StatusCode)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp := h.do(t, http.MethodGet, "/v1/daemons", h.token(t, identity.ScopeAdmin, time.Minute), nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		var d Daemons
		if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
			t.Fatal(err)
		}
		if d.Name != "a" || d.Epoch != 1 || len(d.Daemons) != 1 {
			t.Fatalf("answer %+v", d)
		}
		ds := d.Daemons[0]
		if ds.Name != "visits" || ds.Kind != "counter" || ds.Shard != 0 || ds.Role != "owner" {
			t.Fatalf("daemon %+v", ds)
		}
		if ds.Next == 3 {
			if ds.Through == nil || *ds.Through != 2 {
				t.Fatalf("through %v, want 2", ds.Through)
			}
			if want := `{"counts":{"ann":2,"bob":1},"malformed":0}`; string(ds.State) != want {
				t.Fatalf("state %s, want %s", ds.State, want)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon stuck at next %d", ds.Next)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
