package rules

import (
	"encoding/json"
	"testing"
)

func mustRule(t testing.TB, js string) *Rule {
	t.Helper()
	var s Spec
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		t.Fatalf("decode %s: %v", js, err)
	}
	r, err := New(s)
	if err != nil {
		t.Fatalf("New(%s): %v", js, err)
	}
	return r
}

func holds(t *testing.T, condJSON, payload string) bool {
	t.Helper()
	set := mustParse(t, `[{"name":"r","require":`+condJSON+`}]`)
	r := set.rules[0]
	full := r.require.eval(decodeDoc([]byte(payload)))
	if extracted := r.require.eval(set.fields.extract([]byte(payload))); extracted != full {
		t.Fatalf("extracted fields evaluate to %v, the full decode to %v", extracted, full)
	}
	return full
}

func TestComparisonEdges(t *testing.T) {
	cases := []struct {
		name, cond, payload string
		want                bool
	}{
		{"int above 2^53 gt", `{"field":"v","op":"gt","value":9007199254740992}`, `{"v":9007199254740993}`, true},
		{"int above 2^53 eq is exact", `{"field":"v","op":"eq","value":9007199254740992}`, `{"v":9007199254740993}`, false},
		{"2^63 unsigned gt MaxInt64", `{"field":"v","op":"gt","value":9223372036854775807}`, `{"v":9223372036854775808}`, true},
		{"negative lt unsigned", `{"field":"v","op":"lt","value":18446744073709551615}`, `{"v":-1}`, true},
		{"negative not ge 0", `{"field":"v","op":"ge","value":0}`, `{"v":-9223372036854775808}`, false},
		{"int eq float", `{"field":"v","op":"eq","value":3}`, `{"v":3.0}`, true},
		{"float le int", `{"field":"v","op":"le","value":3}`, `{"v":2.999}`, true},
		{"exponent form", `{"field":"v","op":"eq","value":100}`, `{"v":1e2}`, true},
		{"missing field eq", `{"field":"v","op":"eq","value":1}`, `{"w":1}`, false},
		{"missing field ne", `{"field":"v","op":"ne","value":1}`, `{"w":1}`, false},
		{"missing field lt", `{"field":"v","op":"lt","value":1}`, `{}`, false},
		{"missing field notIn", `{"field":"v","op":"notIn","values":[1]}`, `{}`, false},
		{"absent", `{"field":"v","op":"absent"}`, `{}`, true},
		{"exists null", `{"field":"v","op":"exists"}`, `{"v":null}`, true},
		{"eq null", `{"field":"v","op":"eq","value":null}`, `{"v":null}`, true},
		{"string vs number eq", `{"field":"v","op":"eq","value":1}`, `{"v":"1"}`, false},
		{"string vs number ne", `{"field":"v","op":"ne","value":1}`, `{"v":"1"}`, true},
		{"string vs number lt", `{"field":"v","op":"lt","value":5}`, `{"v":"1"}`, false},
		{"string vs number ge", `{"field":"v","op":"ge","value":5}`, `{"v":"9"}`, false},
		{"bool ordering refused", `{"field":"v","op":"gt","value":false}`, `{"v":true}`, false},
		{"bool eq", `{"field":"v","op":"eq","value":true}`, `{"v":true}`, true},
		{"object vs scalar", `{"field":"v","op":"eq","value":1}`, `{"v":{"a":1}}`, false},
		{"array vs scalar lt", `{"field":"v","op":"lt","value":1}`, `{"v":[0]}`, false},
		{"string ordering", `{"field":"v","op":"lt","value":"b"}`, `{"v":"a"}`, true},
		{"nested path", `{"field":"a.b.c","op":"eq","value":"x"}`, `{"a":{"b":{"c":"x"}}}`, true},
		{"path through non-object", `{"field":"a.b","op":"exists"}`, `{"a":5}`, false},
		{"in exact big", `{"field":"v","op":"in","values":[18446744073709551615, 2]}`, `{"v":18446744073709551615}`, true},
		{"in mismatch", `{"field":"v","op":"in","values":["1"]}`, `{"v":1}`, false},
		{"notIn mismatch", `{"field":"v","op":"notIn","values":["1"]}`, `{"v":1}`, true},
		{"and", `{"and":[{"field":"a","op":"eq","value":1},{"field":"b","op":"eq","value":2}]}`, `{"a":1,"b":2}`, true},
		{"and one false", `{"and":[{"field":"a","op":"eq","value":1},{"field":"b","op":"eq","value":2}]}`, `{"a":1,"b":3}`, false},
		{"or", `{"or":[{"field":"a","op":"eq","value":1},{"field":"b","op":"eq","value":2}]}`, `{"a":0,"b":2}`, true},
		{"not missing lt", `{"not":{"field":"v","op":"lt","value":1}}`, `{}`, true},
		{"not a JSON payload", `{"field":"v","op":"exists"}`, `not json`, false},
		{"trailing data payload", `{"field":"v","op":"exists"}`, `{"v":1} {"v":2}`, false},
		{"top-level array", `{"field":"v","op":"exists"}`, `[{"v":1}]`, false},
		{"payload beyond float64 range is +Inf", `{"field":"v","op":"gt","value":18446744073709551615}`, `{"v":1e400}`, true},
		{"payload beyond float64 range is -Inf", `{"field":"v","op":"lt","value":-9223372036854775808}`, `{"v":-1e400}`, true},
		{"payload beyond float64 range equals nothing", `{"field":"v","op":"eq","value":1.7976931348623157e308}`, `{"v":1e400}`, false},
		{"stray closing bracket", `{"field":"v","op":"exists"}`, `{"v":1}]`, false},
		{"duplicate key: last wins", `{"field":"a.b","op":"eq","value":2}`, `{"a":{"b":1},"a":{"b":2}}`, true},
		{"duplicate key replaced by non-object", `{"field":"a.b","op":"exists"}`, `{"a":{"b":1},"a":5}`, false},
		{"escaped key", `{"field":"ab","op":"eq","value":"é"}`, `{"a\u0062":"\u00e9"}`, true},
		{"skips nested noise", `{"field":"z","op":"eq","value":1}`, `{"x":[{"y":"}]\\\"{"},[[]]],"w":{"z":2},"z":1}`, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := holds(t, c.cond, c.payload); got != c.want {
				t.Fatalf("%s on %s = %v, want %v", c.cond, c.payload, got, c.want)
			}
		})
	}
}

func TestInvalidRulesAreRefused(t *testing.T) {
	bad := []string{
		`{"name":"","require":{"field":"a","op":"exists"}}`,
		`{"name":"x"}`,
		`{"name":"x","require":{"field":"a","op":"like","value":1}}`,
		`{"name":"x","require":{"field":"a","op":"eq"}}`,
		`{"name":"x","require":{"field":"a","op":"eq","value":[1]}}`,
		`{"name":"x","require":{"field":"a","op":"eq","value":{"b":1}}}`,
		`{"name":"x","require":{"field":"a","op":"eq","value":1e400}}`,
		`{"name":"x","require":{"field":"a","op":"in","values":[]}}`,
		`{"name":"x","require":{"field":"a","op":"in","value":1}}`,
		`{"name":"x","require":{"field":"a","op":"exists","value":1}}`,
		`{"name":"x","require":{"field":"a..b","op":"exists"}}`,
		`{"name":"x","require":{"and":[]}}`,
		`{"name":"x","require":{"field":"a","op":"exists","and":[{"field":"b","op":"exists"}]}}`,
		`{"name":"x","require":{}}`,
		`{"name":"x","rateLimit":{"max":0,"window":"1s"}}`,
		`{"name":"x","rateLimit":{"max":1,"window":"0s"}}`,
		`{"name":"x","rateLimit":{"max":1,"window":"-1s"}}`,
		`{"name":"x","rateLimit":{"key":".","max":1,"window":"1s"}}`,
	}
	for _, js := range bad {
		var s Spec
		if err := json.Unmarshal([]byte(js), &s); err != nil {
			continue // refused at decode: fine
		}
		if _, err := New(s); err == nil {
			t.Errorf("New accepted %s", js)
		}
	}
	deep := `{"field":"a","op":"exists"}`
	for range maxDepth + 1 {
		deep = `{"not":` + deep + `}`
	}
	if _, err := Parse([]byte(`[{"name":"x","require":` + deep + `}]`)); err == nil {
		t.Error("nesting deeper than the limit accepted")
	}
	if _, err := Parse([]byte(`[{"name":"x","require":{"field":"a","op":"exists"}},{"name":"x","require":{"field":"b","op":"exists"}}]`)); err == nil {
		t.Error("duplicate names accepted")
	}
	if _, err := Parse([]byte(`[{"name":"x","requires":{"field":"a","op":"exists"}}]`)); err == nil {
		t.Error("unknown field accepted")
	}
	if _, err := Parse([]byte(`[{"name":"x","rateLimit":{"max":1,"window":"9999999999999h"}}]`)); err == nil {
		t.Error("a window that does not fit a duration accepted")
	}
}
