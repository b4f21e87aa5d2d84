package rules

import (
	"encoding/json"
	"fmt"
)

// Condition is the JSON form of a condition. Exactly one form is used:
// a field test (Field with Op, plus Value or Values), or And, Or or Not.
//
//	{"field": "speed", "op": "le", "value": 120}
//	{"field": "kind", "op": "in", "values": ["a", "b"]}
//	{"field": "device.id", "op": "exists"}
//	{"and": [ ... ]}  {"or": [ ... ]}  {"not": { ... }}
//
// Field is a dot-separated path through nested objects. Ops: eq, ne, lt,
// le, gt, ge (Value), in, notIn (Values), exists, absent.
type Condition struct {
	Field  string            `json:"field,omitempty"`
	Op     string            `json:"op,omitempty"`
	Value  json.RawMessage   `json:"value,omitempty"`
	Values []json.RawMessage `json:"values,omitempty"`
	And    []Condition       `json:"and,omitempty"`
	Or     []Condition       `json:"or,omitempty"`
	Not    *Condition        `json:"not,omitempty"`
}

// Limits on one rule's conditions.
const (
	maxDepth  = 32
	maxNodes  = 1024
	maxValues = 4096
)

type opCode uint8

const (
	opEq opCode = iota
	opNe
	opLt
	opLe
	opGt
	opGe
	opIn
	opNotIn
	opExists
	opAbsent
	opAnd
	opOr
	opNot
)

var ops = map[string]opCode{
	"eq": opEq, "ne": opNe, "lt": opLt, "le": opLe, "gt": opGt, "ge": opGe,
	"in": opIn, "notIn": opNotIn, "exists": opExists, "absent": opAbsent,
}

// cond is a compiled condition.
type cond struct {
	op     opCode
	path   []string
	value  scalar
	values []scalar
	kids   []*cond
}

type compileState struct{ nodes int }

func compileCond(c *Condition, depth int, st *compileState) (*cond, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("conditions nest deeper than %d", maxDepth)
	}
	if st.nodes++; st.nodes > maxNodes {
		return nil, fmt.Errorf("more than %d conditions", maxNodes)
	}
	forms := 0
	for _, set := range []bool{c.Field != "" || c.Op != "", c.And != nil, c.Or != nil, c.Not != nil} {
		if set {
			forms++
		}
	}
	if forms != 1 {
		return nil, fmt.Errorf("a condition needs exactly one of field/op, and, or, not (has %d)", forms)
	}
	switch {
	case c.And != nil, c.Or != nil:
		list, op, name := c.And, opAnd, "and"
		if c.Or != nil {
			list, op, name = c.Or, opOr, "or"
		}
		if len(list) == 0 {
			return nil, fmt.Errorf("%s needs at least one condition", name)
		}
		out := &cond{op: op, kids: make([]*cond, len(list))}
		for i := range list {
			k, err := compileCond(&list[i], depth+1, st)
			if err != nil {
				return nil, fmt.Errorf("%s[%d]: %w", name, i, err)
			}
			out.kids[i] = k
		}
		return out, nil
	case c.Not != nil:
		k, err := compileCond(c.Not, depth+1, st)
		if err != nil {
			return nil, fmt.Errorf("not: %w", err)
		}
		return &cond{op: opNot, kids: []*cond{k}}, nil
	}
	op, ok := ops[c.Op]
	if !ok {
		return nil, fmt.Errorf("unknown op %q (want eq, ne, lt, le, gt, ge, in, notIn, exists or absent)", c.Op)
	}
	path, err := parsePath(c.Field)
	if err != nil {
		return nil, err
	}
	out := &cond{op: op, path: path}
	switch op {
	case opExists, opAbsent:
		if c.Value != nil || c.Values != nil {
			return nil, fmt.Errorf("%s takes no value", c.Op)
		}
	case opIn, opNotIn:
		if c.Value != nil {
			return nil, fmt.Errorf("%s takes values, not value", c.Op)
		}
		if len(c.Values) == 0 || len(c.Values) > maxValues {
			return nil, fmt.Errorf("%s needs 1 to %d values", c.Op, maxValues)
		}
		out.values = make([]scalar, len(c.Values))
		for i, raw := range c.Values {
			if out.values[i], err = parseScalar(raw); err != nil {
				return nil, fmt.Errorf("values[%d]: %w", i, err)
			}
		}
	default:
		if c.Values != nil {
			return nil, fmt.Errorf("%s takes value, not values", c.Op)
		}
		if out.value, err = parseScalar(c.Value); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// eval says whether the condition holds for doc.
func (c *cond) eval(doc any) bool {
	switch c.op {
	case opAnd:
		for _, k := range c.kids {
			if !k.eval(doc) {
				return false
			}
		}
		return true
	case opOr:
		for _, k := range c.kids {
			if k.eval(doc) {
				return true
			}
		}
		return false
	case opNot:
		return !c.kids[0].eval(doc)
	}
	v, present := lookup(doc, c.path)
	switch c.op {
	case opExists:
		return present
	case opAbsent:
		return !present
	}
	if !present {
		return false
	}
	switch c.op {
	case opIn, opNotIn:
		found := false
		for _, s := range c.values {
			if eq, ok, _, _ := compareValue(v, s); ok && eq {
				found = true
				break
			}
		}
		return found == (c.op == opIn)
	}
	eq, comparable, order, ordered := compareValue(v, c.value)
	switch c.op {
	case opEq:
		return comparable && eq
	case opNe:
		return !(comparable && eq)
	case opLt:
		return ordered && order < 0
	case opLe:
		return ordered && order <= 0
	case opGt:
		return ordered && order > 0
	case opGe:
		return ordered && order >= 0
	}
	return false
}
