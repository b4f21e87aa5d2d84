package rules

import (
	"encoding/json"
	"testing"
)

// The hash is what the operator compares with a node's to decide whether
// to push: the same rules written differently hash alike, any change in
// behaviour changes it, and Specs round-trips to the same set.
func TestHashIdentifiesBehaviour(t *testing.T) {
	a := mustParse(t, `[{"name":"r","require":{"field":"speed","op":"le","value":400}},
		{"name":"k","rateLimit":{"key":"device","max":2,"window":"1s"}}]`)
	spaced := mustParse(t, `[ { "require" : { "value" : 400, "op" : "le", "field" : "speed" }, "name" : "r" },
		{"name":"k","rateLimit":{"window":"1000ms","max":2,"key":"device"}}]`)
	if a.Hash() != spaced.Hash() {
		t.Fatalf("the same rules written differently hash differently: %s vs %s", a.Hash(), spaced.Hash())
	}
	for name, js := range map[string]string{
		"value":  `[{"name":"r","require":{"field":"speed","op":"le","value":401}},{"name":"k","rateLimit":{"key":"device","max":2,"window":"1s"}}]`,
		"rename": `[{"name":"r2","require":{"field":"speed","op":"le","value":400}},{"name":"k","rateLimit":{"key":"device","max":2,"window":"1s"}}]`,
		"window": `[{"name":"r","require":{"field":"speed","op":"le","value":400}},{"name":"k","rateLimit":{"key":"device","max":2,"window":"2s"}}]`,
		"fewer":  `[{"name":"r","require":{"field":"speed","op":"le","value":400}}]`,
	} {
		if mustParse(t, js).Hash() == a.Hash() {
			t.Errorf("%s: a changed rule set kept the hash", name)
		}
	}
	var none *Set
	if none.Hash() != mustParse(t, `[]`).Hash() {
		t.Fatal("nil and empty sets hash differently")
	}
	data, err := json.Marshal(a.Specs())
	if err != nil {
		t.Fatal(err)
	}
	if again := mustParse(t, string(data)); again.Hash() != a.Hash() {
		t.Fatalf("Specs did not round-trip: %s", data)
	}
}

// Declaration order changes nothing a set enforces (verdicts list failing
// rules sorted, windows are kept per rule), so it must not change the
// hash: a reordered spec.rules would otherwise be pushed to every node as a
// change.
func TestHashIgnoresDeclarationOrder(t *testing.T) {
	a := mustParse(t, `[{"name":"r","require":{"field":"speed","op":"le","value":400}},
		{"name":"k","rateLimit":{"key":"device","max":2,"window":"1s"}},
		{"name":"a","require":{"field":"id","op":"exists"}}]`)
	b := mustParse(t, `[{"name":"a","require":{"field":"id","op":"exists"}},
		{"name":"r","require":{"field":"speed","op":"le","value":400}},
		{"name":"k","rateLimit":{"key":"device","max":2,"window":"1s"}}]`)
	if a.Hash() != b.Hash() {
		t.Fatalf("the same rules in another order hash differently: %s vs %s", a.Hash(), b.Hash())
	}
	// Same names, behaviours swapped between them: a different set.
	c := mustParse(t, `[{"name":"a","require":{"field":"speed","op":"le","value":400}},
		{"name":"k","rateLimit":{"key":"device","max":2,"window":"1s"}},
		{"name":"r","require":{"field":"id","op":"exists"}}]`)
	if c.Hash() == a.Hash() {
		t.Fatal("rules whose names swapped behaviours kept the hash")
	}
	if got := (&Set{rules: a.rules}).Hash(); got != a.Hash() {
		t.Fatalf("an uncompiled copy hashes %s, the compiled set %s", got, a.Hash())
	}
}
