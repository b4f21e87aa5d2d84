package adminclient

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/rules"
)

func TestRulesPushAndRead(t *testing.T) {
	op, _ := identity.Generate(nil)
	var c RulesClient = NewHTTP(op, nil, serve(t, op.PublicKey()))
	ctx := context.Background()
	var specs []rules.Spec
	if err := json.Unmarshal([]byte(`[{"name":"has-id","require":{"field":"id","op":"exists"}}]`), &specs); err != nil {
		t.Fatal(err)
	}
	want, err := rules.Compile(specs)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.PutRules(ctx, specs)
	if err != nil || st.Hash != want.Hash() || st.Count != 1 {
		t.Fatalf("PutRules = %+v, %v", st, err)
	}
	got, err := c.Rules(ctx)
	if err != nil || got.Hash != want.Hash() || len(got.Rules) != 1 || got.Rules[0].Name != "has-id" {
		t.Fatalf("Rules = %+v, %v", got, err)
	}
	bad := []rules.Spec{{Name: "no-check"}}
	var se *StatusError
	if _, err := c.PutRules(ctx, bad); !errors.As(err, &se) || se.Status != 422 || !strings.Contains(se.Message, "no-check") {
		t.Fatalf("invalid rules: want a 422 naming no-check, got %v", err)
	}
	if st, err := c.PutRules(ctx, nil); err != nil || st.Count != 0 || st.Hash != (*rules.Set)(nil).Hash() {
		t.Fatalf("clearing the rules: %+v, %v", st, err)
	}
}
