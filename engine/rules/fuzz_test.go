package rules

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the rule parser: it must return a set
// or an error, never panic, and a set it accepts must evaluate any payload
// and survive a round trip through its JSON form.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`[]`,
		`[{"name":"a","require":{"field":"v","op":"gt","value":9223372036854775808}}]`,
		`[{"name":"a","when":{"field":"k","op":"in","values":["x",1,null,true]},"require":{"not":{"field":"v","op":"absent"}}}]`,
		`[{"name":"a","require":{"or":[{"and":[{"field":"a.b","op":"le","value":-1.5}]},{"field":"c","op":"notIn","values":[18446744073709551615]}]}}]`,
		`[{"name":"r","rateLimit":{"key":"dev.id","max":10,"window":"250ms"}}]`,
		`[{"name":"r","rateLimit":{"max":1,"window":"2562047h"}}]`,
		`[{"name":"x","require":{"field":"a","op":"eq","value":1e400}}]`,
		`[{"name":"x"}]`,
		`{`,
	} {
		f.Add([]byte(s), []byte(`{"v":1,"k":"x","a":{"b":-2},"c":3,"dev":{"id":"d"}}`))
	}
	f.Fuzz(func(t *testing.T, rules, payload []byte) {
		set, err := Parse(rules)
		if err != nil {
			return
		}
		e := NewEngine(set, Options{Now: (&clock{}).now})
		v1 := e.Evaluate([][]byte{payload})
		specs := make([]Spec, 0, set.Len())
		for _, r := range set.Rules() {
			var s Spec
			if err := json.Unmarshal([]byte(r.fingerprint), &s); err != nil {
				t.Fatalf("fingerprint of an accepted rule does not decode: %v", err)
			}
			specs = append(specs, s)
		}
		again, err := Compile(specs)
		if err != nil {
			t.Fatalf("an accepted rule set does not compile from its own JSON form: %v", err)
		}
		v2 := NewEngine(again, Options{Now: (&clock{}).now}).Evaluate([][]byte{payload})
		if v1.Kind != v2.Kind || len(v1.Rules) != len(v2.Rules) {
			t.Fatalf("round trip changed the verdict: %+v vs %+v", v1, v2)
		}
	})
}

// FuzzExtractMatchesFullDecode: for any payload and any read paths, the
// fields evaluation extracts equal what a full decode finds at each path.
func FuzzExtractMatchesFullDecode(f *testing.F) {
	for _, c := range [][2]string{
		{`{"a":{"b":1},"c":"x"}`, "a.b,c"},
		{`{"a":{"b":1},"a":{"b":2}}`, "a.b,a"},
		{`{"a\u0062":"\u00e9","x":[{"y":"}]\"{"}]}`, "ab,x,x.y"},
		{`{"v":18446744073709551616123,"w":-0.0e+5}`, "v,w"},
		{`{"a":5,"a":{"b":true}}`, "a.b"},
		{"{\"k\xff\":\"v\xfe\"}", "k\uFFFD"},
		{`[1,2]`, "a"},
		{`{"a":1}]`, "a"},
		{` {"a" : { } , "b" : [ ] } `, "a,b,a.c"},
	} {
		f.Add([]byte(c[0]), c[1])
	}
	f.Fuzz(func(t *testing.T, payload []byte, pathList string) {
		var tree fieldTree
		var paths [][]string
		for _, p := range strings.Split(pathList, ",") {
			path := strings.Split(p, ".")
			if len(path) > maxPathSegments {
				continue
			}
			tree.add(path)
			paths = append(paths, path)
		}
		full := decodeDoc(payload)
		got := tree.extract(payload)
		for _, p := range paths {
			fv, fok := lookup(full, p)
			gv, gok := lookup(got, p)
			if fok != gok || !reflect.DeepEqual(fv, gv) {
				t.Fatalf("path %q of %q: full decode %v (%v), extracted %v (%v)", p, payload, fv, fok, gv, gok)
			}
		}
	})
}
