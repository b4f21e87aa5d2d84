package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/rules"
	"github.com/purplerain/mesh-operator/node"
	"github.com/purplerain/mesh-operator/node/dataapi"
)

func decodeBody[T any](t *testing.T, resp *http.Response) T {
	t.Helper()
	var v T
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func (h *harness) ingest(payload string) error {
	_, err := h.node.Ingest(context.Background(), []dataapi.Event{{Payload: []byte(payload)}})
	return err
}

func ruleOf(err error) (string, bool) {
	var re *node.RuleRejectedError
	if !errors.As(err, &re) {
		return "", false
	}
	return re.Rule, re.RateLimited
}

// PUT /v1/rules replaces the rules of a running node at once, is
// idempotent (an unchanged rule keeps its rate window), refuses an invalid
// set whole naming the rule (the old rules stay), needs the operator's
// token, and status reports the enforced set's hash.
func TestRulesPushAppliesAtOnceAndIsIdempotent(t *testing.T) {
	h := newHarness(t)
	tok := h.token(t, identity.ScopeAdmin, time.Minute)
	if resp := h.do(t, http.MethodPut, "/v1/topology", tok, topo(1)); resp.StatusCode != http.StatusOK {
		t.Fatalf("push topology: %d", resp.StatusCode)
	}
	specs := []byte(`[{"name":"one-per-hour","rateLimit":{"key":"device","max":1,"window":"1h"}},
		{"name":"speed-in-range","require":{"field":"speed","op":"le","value":400}}]`)
	want, err := rules.Parse(specs)
	if err != nil {
		t.Fatal(err)
	}

	if resp := h.do(t, http.MethodPut, "/v1/rules", "", json.RawMessage(specs)); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unauthenticated push: %d, want 401", resp.StatusCode)
	}
	if h.node.Rules().Len() != 0 {
		t.Fatal("a refused push changed the rules")
	}

	resp := h.do(t, http.MethodPut, "/v1/rules", tok, json.RawMessage(specs))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("push rules: %d", resp.StatusCode)
	}
	if got := decodeBody[RulesStatus](t, resp); got.Hash != want.Hash() || got.Count != 2 {
		t.Fatalf("push answered %+v, want hash %s and 2 rules", got, want.Hash())
	}
	if rule, _ := ruleOf(h.ingest(`{"device":"d1","speed":900}`)); rule != "speed-in-range" {
		t.Fatalf("the pushed rule is not enforced: %q", rule)
	}
	if err := h.ingest(`{"device":"d1","speed":10}`); err != nil {
		t.Fatalf("valid event refused: %v", err)
	}
	if rule, limited := ruleOf(h.ingest(`{"device":"d1","speed":10}`)); rule != "one-per-hour" || !limited {
		t.Fatalf("second event of d1 in the window: want rate limited by one-per-hour, got %q", rule)
	}

	// The same set again, then with one rule changed: one-per-hour is
	// unchanged both times, so d1's window survives and it stays limited.
	if resp := h.do(t, http.MethodPut, "/v1/rules", tok, json.RawMessage(specs)); resp.StatusCode != http.StatusOK {
		t.Fatalf("repeat push: %d", resp.StatusCode)
	}
	changed := strings.Replace(string(specs), `"value":400`, `"value":1000`, 1)
	if resp := h.do(t, http.MethodPut, "/v1/rules", tok, json.RawMessage(changed)); resp.StatusCode != http.StatusOK {
		t.Fatalf("changed push: %d", resp.StatusCode)
	}
	if rule, limited := ruleOf(h.ingest(`{"device":"d1","speed":900}`)); rule != "one-per-hour" || !limited {
		t.Fatalf("after reloads d1 should still be rate limited (window kept), got %q", rule)
	}
	if err := h.ingest(`{"device":"d2","speed":900}`); err != nil {
		t.Fatalf("the changed rule should accept speed 900: %v", err)
	}

	// An invalid set is refused whole, naming the rule; the changed set
	// stays in force.
	before := h.node.Rules().Hash()
	bad := `[{"name":"fine","require":{"field":"a","op":"exists"}},{"name":"typo","require":{"field":"speed","op":"gte","value":1}}]`
	resp = h.do(t, http.MethodPut, "/v1/rules", tok, json.RawMessage(bad))
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(body), `rule \"typo\"`) {
		t.Fatalf("invalid push: %d %s, want 422 naming typo", resp.StatusCode, body)
	}
	if h.node.Rules().Hash() != before {
		t.Fatal("an invalid push changed the rules")
	}

	st := decodeBody[Status](t, h.do(t, http.MethodGet, "/v1/status", tok, nil))
	if st.Rules.Hash != before || st.Rules.Count != 2 {
		t.Fatalf("status rules = %+v, want hash %s", st.Rules, before)
	}
	got := decodeBody[Rules](t, h.do(t, http.MethodGet, "/v1/rules", tok, nil))
	if got.Hash != before || len(got.Rules) != 2 || got.Rules[1].Name != "speed-in-range" {
		t.Fatalf("GET /v1/rules = %+v", got)
	}
	if s, err := rules.Compile(got.Rules); err != nil || s.Hash() != before {
		t.Fatalf("the listed rules do not compile back to the enforced set: %v", err)
	}
}
