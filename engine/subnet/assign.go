package subnet

import (
	"errors"
	"fmt"
)

// Rule maps one node label onto one level: a node whose label Label has a
// value listed in Values gets that level set to the mapped number.
type Rule struct {
	Label  string           `json:"label"`
	Level  int              `json:"level"`
	Values map[string]uint8 `json:"values"`
}

// NewRule validates a rule: a label, a level 0..3 and mapped values 1..255
// (0 would mean "not specified").
func NewRule(label string, level int, values map[string]uint8) (Rule, error) {
	r := Rule{Label: label, Level: level, Values: values}
	return r, r.Validate()
}

// Validate checks the rule.
func (r Rule) Validate() error {
	if r.Label == "" {
		return errors.New("subnet rule: label must not be empty")
	}
	if r.Level < 0 || r.Level >= Levels {
		return fmt.Errorf("subnet rule %q: level must be 0..%d, got %d", r.Label, Levels-1, r.Level)
	}
	if len(r.Values) == 0 {
		return fmt.Errorf("subnet rule %q: values must not be empty", r.Label)
	}
	for v, n := range r.Values {
		if n == 0 {
			return fmt.Errorf("subnet rule %q: value %q maps to 0, which means not specified", r.Label, v)
		}
	}
	return nil
}

// Policy assigns subnets from labels.
type Policy struct{ rules []Rule }

// NewPolicy validates rules (in order) into a policy.
func NewPolicy(rules []Rule) (*Policy, error) {
	var errs []error
	for i, r := range rules {
		if err := r.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("rules[%d]: %w", i, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Policy{rules: append([]Rule(nil), rules...)}, nil
}

// Assign derives a node's subnet from its labels. Rules apply in order; a
// later rule for the same level overrides. An assignment that leaves a gap
// (a fleet without a region) is an error, not a silently shortened ID.
func (p *Policy) Assign(labels map[string]string) (ID, error) {
	var levels [Levels]uint8
	for _, r := range p.rules {
		v, ok := labels[r.Label]
		if !ok {
			continue
		}
		if n, ok := r.Values[v]; ok {
			levels[r.Level] = n
		}
	}
	id, err := FromLevels(levels[:]...)
	if err != nil {
		return 0, fmt.Errorf("assign subnet from labels: %w", err)
	}
	return id, nil
}
