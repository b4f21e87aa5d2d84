package rules

import (
	"encoding/json"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is the outcome of an evaluation.
type Kind uint8

const (
	Accept Kind = iota
	Reject
	RateLimited
)

func (k Kind) String() string {
	switch k {
	case Reject:
		return "Reject"
	case RateLimited:
		return "RateLimited"
	}
	return "Accept"
}

// Verdict is the outcome of evaluating a batch of events. Rules lists the
// failing rules of the verdict's kind, sorted and de-duplicated. A batch
// that fails a require is rejected without its rate limits being checked.
type Verdict struct {
	Kind  Kind
	Rules []string
}

// Rule is the first failing rule ("" when accepted).
func (v Verdict) Rule() string {
	if len(v.Rules) == 0 {
		return ""
	}
	return v.Rules[0]
}

// Stats are a rule's verdict counters: refused batches it caused, by kind.
// They are kept by rule name across reloads.
type Stats struct {
	Name        string
	Rejected    uint64
	RateLimited uint64
}

// Options configures an Engine.
type Options struct {
	// Now is a monotonic clock for rate windows. Default: time elapsed
	// since the engine was created (monotonic, immune to wall-clock jumps).
	Now func() time.Duration
}

// Engine evaluates the current rule set and keeps the rate windows. It is
// safe for concurrent use.
type Engine struct {
	now   func() time.Duration
	state atomic.Pointer[state]

	// mu guards every limiter's windows and serialises reloads, so a batch's
	// rate check and commit are atomic.
	mu sync.Mutex

	statsMu sync.Mutex
	stats   map[string]*counters
}

// state is one rule set with its limiters, swapped together.
type state struct {
	set      *Set
	limiters map[string]*limiter // by rule name; only rules with a rate limit
	stats    []*counters         // parallel to set.rules
}

type counters struct{ rejected, rateLimited atomic.Uint64 }

// NewEngine returns an engine evaluating set (nil: no rules).
func NewEngine(set *Set, opts Options) *Engine {
	if opts.Now == nil {
		start := time.Now()
		opts.Now = func() time.Duration { return time.Since(start) }
	}
	e := &Engine{now: opts.Now, stats: map[string]*counters{}}
	e.Replace(set)
	return e
}

// Replace makes set current. Rules whose specification is unchanged keep
// their rate windows; a changed or new rate limit starts empty; windows of
// rules no longer present are dropped. Rules without a rate limit have no
// window to keep or reset.
func (e *Engine) Replace(set *Set) {
	if set == nil {
		set = &Set{}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.state.Load()
	st := &state{set: set, limiters: map[string]*limiter{}, stats: make([]*counters, len(set.rules))}
	for _, r := range set.rules {
		if r.rate == nil {
			continue
		}
		if old != nil {
			if l, ok := old.limiters[r.name]; ok && l.fingerprint == r.fingerprint {
				st.limiters[r.name] = l
				continue
			}
		}
		st.limiters[r.name] = &limiter{spec: *r.rate, fingerprint: r.fingerprint, windows: map[string]*window{}}
	}
	e.statsMu.Lock()
	for i, r := range set.rules {
		c, ok := e.stats[r.name]
		if !ok {
			c = &counters{}
			e.stats[r.name] = c
		}
		st.stats[i] = c
	}
	e.statsMu.Unlock()
	e.state.Store(st)
}

// Set is the current rule set.
func (e *Engine) Set() *Set { return e.state.Load().set }

// Len is the number of current rules.
func (e *Engine) Len() int { return e.state.Load().set.Len() }

// Stats returns the counters of the current rules, in rule order.
func (e *Engine) Stats() []Stats {
	st := e.state.Load()
	out := make([]Stats, len(st.set.rules))
	for i, r := range st.set.rules {
		out[i] = Stats{Name: r.name, Rejected: st.stats[i].rejected.Load(), RateLimited: st.stats[i].rateLimited.Load()}
	}
	return out
}

// Evaluate decides a batch of event payloads: Accept, Reject naming every
// rule some event fails, or RateLimited naming every rule whose budget the
// batch would exceed. Only an accepted batch consumes rate budget.
func (e *Engine) Evaluate(payloads [][]byte) Verdict {
	st := e.state.Load()
	if len(st.set.rules) == 0 {
		return Verdict{Kind: Accept}
	}
	var rejected []int
	// tallies[rule index][key] counts selected events per rate key.
	var tallies map[int]map[string]uint64
	for _, p := range payloads {
		doc := st.set.fields.extract(p)
		for i, r := range st.set.rules {
			if r.when != nil && !r.when.eval(doc) {
				continue
			}
			if r.require != nil && !r.require.eval(doc) {
				rejected = append(rejected, i)
				continue
			}
			if r.rate != nil && rejected == nil {
				if tallies == nil {
					tallies = map[int]map[string]uint64{}
				}
				t := tallies[i]
				if t == nil {
					t = map[string]uint64{}
					tallies[i] = t
				}
				t[rateKey(doc, r.rate.key)]++
			}
		}
	}
	if rejected != nil {
		return e.verdict(st, Reject, rejected)
	}
	if tallies == nil {
		return Verdict{Kind: Accept}
	}
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	var limited []int
	for i, t := range tallies {
		l := st.limiters[st.set.rules[i].name]
		for key, n := range t {
			if !l.admits(key, n, now) {
				limited = append(limited, i)
				break
			}
		}
	}
	if limited != nil {
		return e.verdict(st, RateLimited, limited)
	}
	for i, t := range tallies {
		l := st.limiters[st.set.rules[i].name]
		for key, n := range t {
			l.commit(key, n, now)
		}
	}
	return Verdict{Kind: Accept}
}

// verdict builds a sorted, de-duplicated verdict and counts it once per
// failing rule.
func (e *Engine) verdict(st *state, kind Kind, idx []int) Verdict {
	slices.Sort(idx)
	idx = slices.Compact(idx)
	names := make([]string, len(idx))
	for j, i := range idx {
		names[j] = st.set.rules[i].name
		if kind == Reject {
			st.stats[i].rejected.Add(1)
		} else {
			st.stats[i].rateLimited.Add(1)
		}
	}
	slices.Sort(names)
	return Verdict{Kind: kind, Rules: slices.Compact(names)}
}

// rateKey is the canonical text of the key field: the string itself for
// strings (prefixed so "1" and 1 differ), the JSON text otherwise, and ""
// for a missing field or no key.
func rateKey(doc any, path []string) string {
	if path == nil {
		return ""
	}
	v, ok := lookup(doc, path)
	if !ok {
		return ""
	}
	if s, ok := v.(string); ok {
		return "s" + s
	}
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return "j" + string(b)
}

// limiter holds one rate-limited rule's fixed windows, one per key.
type limiter struct {
	spec        rateSpec
	fingerprint string
	windows     map[string]*window
	// sweepAt is the map size at which expired windows are dropped, so idle
	// keys do not accumulate.
	sweepAt int
}

type window struct {
	start time.Duration
	count uint64
}

// saturatingAdd adds durations, clamping at the largest (and smallest)
// duration instead of wrapping.
func saturatingAdd(a, b time.Duration) time.Duration {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	if b < 0 && a < math.MinInt64-b {
		return math.MinInt64
	}
	return a + b
}

func saturatingAddU64(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}

// current returns key's window at now, or nil if it has none or it ended
// (a window covers [start, start+window)).
func (l *limiter) current(key string, now time.Duration) *window {
	w := l.windows[key]
	if w == nil || now >= saturatingAdd(w.start, l.spec.window) || now < w.start {
		return nil
	}
	return w
}

// admits says whether n more events for key fit the current window.
func (l *limiter) admits(key string, n uint64, now time.Duration) bool {
	var used uint64
	if w := l.current(key, now); w != nil {
		used = w.count
	}
	return saturatingAddU64(used, n) <= l.spec.max
}

// commit spends n events of key's budget, opening a new window if the
// last one ended.
func (l *limiter) commit(key string, n uint64, now time.Duration) {
	w := l.current(key, now)
	if w == nil {
		if len(l.windows) >= max(l.sweepAt, 1024) {
			l.sweep(now)
		}
		w = &window{start: now}
		l.windows[key] = w
	}
	w.count = saturatingAddU64(w.count, n)
}

func (l *limiter) sweep(now time.Duration) {
	for k, w := range l.windows {
		if now >= saturatingAdd(w.start, l.spec.window) || now < w.start {
			delete(l.windows, k)
		}
	}
	l.sweepAt = 2 * len(l.windows)
}
