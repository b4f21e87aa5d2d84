package rules

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Spec is the JSON form of one rule, as written in the node configuration
// and in MeshCluster spec.rules.
//
//	{"name": "speed-in-range",
//	 "when": {"field": "kind", "op": "eq", "value": "telemetry"},
//	 "require": {"and": [{"field": "speed", "op": "ge", "value": 0},
//	                     {"field": "speed", "op": "le", "value": 400}]},
//	 "rateLimit": {"key": "device", "max": 100, "window": "1s"}}
//
// When (optional) selects the events the rule applies to; the others pass
// it untouched. Require (optional) must hold for every selected event,
// otherwise the event is rejected. RateLimit (optional) admits at most Max
// selected events per value of the Key field per fixed Window. A rule needs
// Require or RateLimit.
type Spec struct {
	Name      string     `json:"name"`
	When      *Condition `json:"when,omitempty"`
	Require   *Condition `json:"require,omitempty"`
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
}

// RateLimit bounds how many selected events a key may send per window.
// Key is a field path; empty means one budget for all events, and events
// without the field share the budget of the missing key.
type RateLimit struct {
	Key    string   `json:"key,omitempty"`
	Max    uint64   `json:"max"`
	Window Duration `json:"window"`
}

// Duration is a time.Duration written as a Go duration string ("1s").
// Parsing refuses values that do not fit, so nothing wraps.
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"1s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// Limits on a rule set.
const (
	MaxRules   = 1024
	maxNameLen = 253
)

// Rule is one compiled, validated rule.
type Rule struct {
	name    string
	when    *cond
	require *cond
	rate    *rateSpec
	// fingerprint is the rule's canonical JSON: two rules with the same
	// fingerprint behave identically, so a reload keeps their windows.
	fingerprint string
}

type rateSpec struct {
	key    []string // nil: one budget
	max    uint64
	window time.Duration
}

// Name is the rule's name.
func (r *Rule) Name() string { return r.name }

// RateLimited says whether the rule has a rate limit.
func (r *Rule) RateLimited() bool { return r.rate != nil }

// New validates and compiles one rule.
func New(s Spec) (*Rule, error) {
	if s.Name == "" {
		return nil, errors.New("name must not be empty")
	}
	if len(s.Name) > maxNameLen {
		return nil, fmt.Errorf("name is longer than %d bytes", maxNameLen)
	}
	if s.Require == nil && s.RateLimit == nil {
		return nil, fmt.Errorf("rule %q needs require or rateLimit", s.Name)
	}
	r := &Rule{name: s.Name}
	st := &compileState{}
	var err error
	if s.When != nil {
		if r.when, err = compileCond(s.When, 0, st); err != nil {
			return nil, fmt.Errorf("rule %q: when: %w", s.Name, err)
		}
	}
	if s.Require != nil {
		if r.require, err = compileCond(s.Require, 0, st); err != nil {
			return nil, fmt.Errorf("rule %q: require: %w", s.Name, err)
		}
	}
	if rl := s.RateLimit; rl != nil {
		if rl.Max == 0 {
			return nil, fmt.Errorf("rule %q: rateLimit.max must be at least 1", s.Name)
		}
		if rl.Window.Duration <= 0 {
			return nil, fmt.Errorf("rule %q: rateLimit.window must be positive", s.Name)
		}
		r.rate = &rateSpec{max: rl.Max, window: rl.Window.Duration}
		if rl.Key != "" {
			if r.rate.key, err = parsePath(rl.Key); err != nil {
				return nil, fmt.Errorf("rule %q: rateLimit.key: %w", s.Name, err)
			}
		}
	}
	fp, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("rule %q: %w", s.Name, err)
	}
	r.fingerprint = string(fp)
	return r, nil
}

// Set is an immutable, validated rule set.
type Set struct {
	rules []*Rule
	specs []Spec
	// hash is Hash, computed once by Compile (a Set never changes).
	hash string
	// fields are the paths the rules read, extracted from each payload.
	fields fieldTree
}

// Rules lists the set's rules in declaration order.
func (s *Set) Rules() []*Rule {
	if s == nil {
		return nil
	}
	return s.rules
}

// Len is the number of rules.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.rules)
}

// Specs returns a copy of the specifications the set was compiled from, in
// declaration order.
func (s *Set) Specs() []Spec {
	if s == nil {
		return nil
	}
	return append([]Spec(nil), s.specs...)
}

// Hash identifies the set's behaviour: a digest of every rule's canonical
// JSON, taken in name order. Two sets with the same hash enforce the same
// rules, so whoever distributes rules (the operator) can compare the hash
// a node reports with the one it wants instead of pushing again. The order
// rules are declared in does not change what a set enforces (verdicts name
// failing rules sorted, rate windows are kept per rule), so it does not
// change the hash either: reordering spec.rules pushes nothing. The empty
// and the nil set share one hash.
func (s *Set) Hash() string {
	if s != nil && s.hash != "" {
		return s.hash
	}
	return hashRules(s.Rules())
}

func hashRules(rs []*Rule) string {
	// Names are unique within a set, so name order is a total order.
	sorted := slices.SortedFunc(slices.Values(rs), func(a, b *Rule) int { return strings.Compare(a.name, b.name) })
	h := sha256.New()
	for _, r := range sorted {
		// Length-prefixed, so no two lists of fingerprints collide.
		fmt.Fprintf(h, "%d:%s", len(r.fingerprint), r.fingerprint)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// IndexError names the rule (by position) that is invalid.
type IndexError struct {
	Index int
	Err   error
}

func (e *IndexError) Error() string { return fmt.Sprintf("rules[%d]: %v", e.Index, e.Err) }
func (e *IndexError) Unwrap() error { return e.Err }

// Compile validates and compiles specs into a Set. Every problem is
// returned (joined), each an *IndexError; names must be unique.
func Compile(specs []Spec) (*Set, error) {
	if len(specs) > MaxRules {
		return nil, fmt.Errorf("at most %d rules, got %d", MaxRules, len(specs))
	}
	set := &Set{rules: make([]*Rule, 0, len(specs))}
	seen := map[string]bool{}
	var errs []error
	for i, s := range specs {
		r, err := New(s)
		if err != nil {
			errs = append(errs, &IndexError{Index: i, Err: err})
			continue
		}
		if seen[r.name] {
			errs = append(errs, &IndexError{Index: i, Err: fmt.Errorf("duplicate rule name %q", r.name)})
			continue
		}
		seen[r.name] = true
		set.rules = append(set.rules, r)
		set.specs = append(set.specs, s)
		set.fields.addCond(r.when)
		set.fields.addCond(r.require)
		if r.rate != nil && r.rate.key != nil {
			set.fields.add(r.rate.key)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	set.hash = hashRules(set.rules)
	return set, nil
}

// Parse decodes a JSON array of rule specs (unknown fields are errors) and
// compiles it.
func Parse(data []byte) (*Set, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var specs []Spec
	if err := dec.Decode(&specs); err != nil {
		return nil, fmt.Errorf("decode rules: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decode rules: trailing data after the rule list")
	}
	return Compile(specs)
}
