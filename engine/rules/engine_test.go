package rules

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

type clock struct{ t time.Duration }

func (c *clock) now() time.Duration { return c.t }

func mustParse(t testing.TB, js string) *Set {
	t.Helper()
	s, err := Parse([]byte(js))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return s
}

func events(ps ...string) [][]byte {
	out := make([][]byte, len(ps))
	for i, p := range ps {
		out[i] = []byte(p)
	}
	return out
}

func TestAcceptRejectAndWhenScope(t *testing.T) {
	e := NewEngine(mustParse(t, `[
		{"name":"speed-range","when":{"field":"kind","op":"eq","value":"telemetry"},
		 "require":{"and":[{"field":"speed","op":"ge","value":0},{"field":"speed","op":"le","value":400}]}}
	]`), Options{})
	if v := e.Evaluate(events(`{"kind":"telemetry","speed":120}`, `{"kind":"log"}`)); v.Kind != Accept {
		t.Fatalf("want Accept, got %+v", v)
	}
	v := e.Evaluate(events(`{"kind":"telemetry","speed":120}`, `{"kind":"telemetry","speed":401}`))
	if v.Kind != Reject || v.Rule() != "speed-range" {
		t.Fatalf("want Reject(speed-range), got %+v", v)
	}
	if st := e.Stats(); st[0].Rejected != 1 {
		t.Fatalf("rejections counted %d, want 1", st[0].Rejected)
	}
}

// "Non-deterministic verdict ordering": the failing list is sorted and
// de-duplicated whatever the rule order.
func TestNonDeterministicVerdictOrderingIsSortedAndDeduplicated(t *testing.T) {
	var specs []string
	for i := range 20 {
		specs = append(specs, fmt.Sprintf(`{"name":"r%02d","require":{"field":"f%d","op":"exists"}}`, i, i%7))
	}
	payloads := events(`{"f1":1}`, `{"f2":1}`, `{}`)
	var want []string
	for i := range 20 {
		want = append(want, fmt.Sprintf("r%02d", i))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		rng.Shuffle(len(specs), func(i, j int) { specs[i], specs[j] = specs[j], specs[i] })
		e := NewEngine(mustParse(t, "["+join(specs)+"]"), Options{})
		v := e.Evaluate(payloads)
		if v.Kind != Reject || !slices.Equal(v.Rules, want) {
			t.Fatalf("verdict %v, want all 20 rules sorted once", v.Rules)
		}
	}
}

func join(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}

func TestRateWindowSemantics(t *testing.T) {
	c := &clock{t: 5 * time.Second}
	e := NewEngine(mustParse(t, `[{"name":"per-device","rateLimit":{"key":"device","max":3,"window":"1s"}}]`), Options{Now: c.now})
	a, b := `{"device":"a"}`, `{"device":"b"}`
	if v := e.Evaluate(events(a, a)); v.Kind != Accept {
		t.Fatalf("2 of 3: %+v", v)
	}
	if v := e.Evaluate(events(a, a)); v.Kind != RateLimited || v.Rule() != "per-device" {
		t.Fatalf("4 of 3: want RateLimited(per-device), got %+v", v)
	}
	// The refused batch consumed nothing: one more still fits.
	if v := e.Evaluate(events(a)); v.Kind != Accept {
		t.Fatalf("3 of 3 after a refused batch: %+v", v)
	}
	if v := e.Evaluate(events(a)); v.Kind != RateLimited {
		t.Fatalf("budget spent: %+v", v)
	}
	// Keys have separate budgets.
	if v := e.Evaluate(events(b, b, b)); v.Kind != Accept {
		t.Fatalf("other key: %+v", v)
	}
	// The window is [start, start+1s): still full just before its end...
	c.t += time.Second - 1
	if v := e.Evaluate(events(a)); v.Kind != RateLimited {
		t.Fatalf("1ns before the window ends: %+v", v)
	}
	// ...and a fresh budget at its end.
	c.t++
	if v := e.Evaluate(events(a, a, a)); v.Kind != Accept {
		t.Fatalf("new window: %+v", v)
	}
	// A single batch larger than the budget never fits.
	c.t += time.Hour
	if v := e.Evaluate(events(b, b, b, b)); v.Kind != RateLimited {
		t.Fatalf("oversized batch: %+v", v)
	}
	if st := e.Stats(); st[0].RateLimited != 4 {
		t.Fatalf("rate-limited batches counted %d, want 4", st[0].RateLimited)
	}
}

func TestRejectedBatchConsumesNoRateBudget(t *testing.T) {
	c := &clock{}
	e := NewEngine(mustParse(t, `[
		{"name":"limit","rateLimit":{"max":2,"window":"1m"}},
		{"name":"has-id","require":{"field":"id","op":"exists"}}]`), Options{Now: c.now})
	if v := e.Evaluate(events(`{"id":1}`, `{}`)); v.Kind != Reject || v.Rule() != "has-id" {
		t.Fatalf("want Reject(has-id), got %+v", v)
	}
	if v := e.Evaluate(events(`{"id":1}`, `{"id":2}`)); v.Kind != Accept {
		t.Fatalf("the rejected batch spent budget: %+v", v)
	}
}

// "record_execution window-reset across rule reload": a reload keeps the
// windows of unchanged rules, resets changed ones, and never resets
// anything for rules without a rate limit.
func TestRecordExecutionWindowResetAcrossRuleReload(t *testing.T) {
	c := &clock{}
	const (
		limitA = `{"name":"a","rateLimit":{"max":2,"window":"1m"}}`
		limitB = `{"name":"b","rateLimit":{"key":"k","max":2,"window":"1m"}}`
		plain  = `{"name":"plain","require":{"field":"k","op":"exists"}}`
	)
	e := NewEngine(mustParse(t, "["+limitA+","+limitB+","+plain+"]"), Options{Now: c.now})
	if v := e.Evaluate(events(`{"k":1}`, `{"k":1}`)); v.Kind != Accept {
		t.Fatal(v)
	}
	if v := e.Evaluate(events(`{}`)); v.Kind != Reject {
		t.Fatal(v)
	}
	// Reload: a unchanged, b changed (max 3), plain changed (require).
	e.Replace(mustParse(t, `[`+limitA+`,{"name":"b","rateLimit":{"key":"k","max":3,"window":"1m"}},
		{"name":"plain","require":{"field":"k","op":"ge","value":0}}]`))
	v := e.Evaluate(events(`{"k":1}`))
	if v.Kind != RateLimited || !slices.Equal(v.Rules, []string{"a"}) {
		t.Fatalf("unchanged rule a must keep its full window and b must restart; got %+v", v)
	}
	// Reload with the same set object content again, rate rules unchanged:
	// windows stay.
	e.Replace(mustParse(t, `[`+limitA+`,{"name":"b","rateLimit":{"key":"k","max":3,"window":"1m"}}]`))
	if v := e.Evaluate(events(`{"k":1}`)); v.Kind != RateLimited {
		t.Fatalf("a's window reset by a reload that only removed a non-rate rule: %+v", v)
	}
	// Verdict counters are kept by name across reloads.
	stats := e.Stats()
	if stats[0].Name != "a" || stats[0].RateLimited != 2 {
		t.Fatalf("stats after reload: %+v", stats)
	}
	c.t += time.Minute
	if v := e.Evaluate(events(`{"k":1}`, `{"k":1}`)); v.Kind != Accept {
		t.Fatalf("after the window: %+v", v)
	}
}

// "Rule::new lossily casts u128 millis to u64": window ends saturate, so a
// huge window near the end of the clock never wraps and expires early.
func TestRuleWindowArithmeticSaturates(t *testing.T) {
	if got := saturatingAdd(math.MaxInt64-1, time.Hour); got != math.MaxInt64 {
		t.Fatalf("saturatingAdd = %d", got)
	}
	if got := saturatingAdd(math.MinInt64+1, -time.Hour); got != math.MinInt64 {
		t.Fatalf("saturatingAdd negative = %d", got)
	}
	if got := saturatingAddU64(math.MaxUint64-1, 5); got != math.MaxUint64 {
		t.Fatalf("saturatingAddU64 = %d", got)
	}
	c := &clock{t: math.MaxInt64 - 10}
	e := NewEngine(mustParse(t, `[{"name":"huge","rateLimit":{"max":1,"window":"2562047h"}}]`), Options{Now: c.now})
	if v := e.Evaluate(events(`{}`)); v.Kind != Accept {
		t.Fatal(v)
	}
	c.t += 5
	if v := e.Evaluate(events(`{}`)); v.Kind != RateLimited {
		t.Fatalf("a wrapped window end would have reopened the budget: %+v", v)
	}
	// A clock that went backwards starts a fresh window rather than
	// trusting a start in the future.
	c.t = 0
	if v := e.Evaluate(events(`{}`)); v.Kind != Accept {
		t.Fatalf("clock before the window start: %+v", v)
	}
}

func TestIdleKeysAreSwept(t *testing.T) {
	c := &clock{}
	e := NewEngine(mustParse(t, `[{"name":"k","rateLimit":{"key":"k","max":1,"window":"1s"}}]`), Options{Now: c.now})
	for i := range 5000 {
		c.t += time.Second
		if v := e.Evaluate(events(fmt.Sprintf(`{"k":%d}`, i))); v.Kind != Accept {
			t.Fatal(v)
		}
	}
	if n := len(e.state.Load().limiters["k"].windows); n > 2048 {
		t.Fatalf("%d windows kept for idle keys", n)
	}
}

func TestRateKeyDistinguishesTypes(t *testing.T) {
	c := &clock{}
	e := NewEngine(mustParse(t, `[{"name":"k","rateLimit":{"key":"k","max":1,"window":"1s"}}]`), Options{Now: c.now})
	for _, p := range []string{`{"k":"1"}`, `{"k":1}`, `{}`, `{"k":null}`} {
		if v := e.Evaluate(events(p)); v.Kind != Accept {
			t.Fatalf("%s shares a budget with an earlier key: %+v", p, v)
		}
	}
}

func TestConcurrentEvaluateAndReplace(t *testing.T) {
	e := NewEngine(mustParse(t, `[{"name":"k","rateLimit":{"key":"k","max":1000000,"window":"1h"}}]`), Options{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 200 {
			e.Replace(mustParse(t, `[{"name":"k","rateLimit":{"key":"k","max":1000000,"window":"1h"}},{"name":"x","require":{"field":"k","op":"exists"}}]`))
		}
	}()
	for range 2000 {
		if v := e.Evaluate(events(`{"k":1}`)); v.Kind != Accept {
			t.Error(v)
			break
		}
		_ = e.Stats()
	}
	<-done
}
