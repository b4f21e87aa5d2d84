package rules

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// decodeDoc decodes a whole event payload with UseNumber, so no number is
// rounded through float64. A payload that is not one valid JSON value
// decodes to nil: every field is then missing. Evaluation uses the
// equivalent, cheaper fieldTree.extract; decodeDoc is its reference.
func decodeDoc(payload []byte) any {
	if !json.Valid(payload) {
		return nil // includes trailing data after one value
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil
	}
	return v
}

// lookup walks path through nested objects.
func lookup(doc any, path []string) (any, bool) {
	v := doc
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// Limits on untrusted rule input.
const (
	maxPathSegments = 16
	maxFieldLen     = 256
)

func parsePath(field string) ([]string, error) {
	if field == "" {
		return nil, fmt.Errorf("field must not be empty")
	}
	if len(field) > maxFieldLen {
		return nil, fmt.Errorf("field is longer than %d bytes", maxFieldLen)
	}
	path := strings.Split(field, ".")
	if len(path) > maxPathSegments {
		return nil, fmt.Errorf("field %q has more than %d segments", field, maxPathSegments)
	}
	for _, s := range path {
		if s == "" {
			return nil, fmt.Errorf("field %q has an empty segment", field)
		}
	}
	return path, nil
}

// scalarKind is the type of a rule constant.
type scalarKind uint8

const (
	scalarNull scalarKind = iota
	scalarBool
	scalarString
	scalarNumber
)

// scalar is a rule constant: null, a bool, a string or an exact number.
type scalar struct {
	kind scalarKind
	b    bool
	s    string
	n    number
}

// parseScalar decodes a rule constant; arrays and objects are refused.
func parseScalar(raw json.RawMessage) (scalar, error) {
	if len(raw) == 0 {
		return scalar{}, fmt.Errorf("value is required")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return scalar{}, fmt.Errorf("value: %w", err)
	}
	switch x := v.(type) {
	case nil:
		return scalar{kind: scalarNull}, nil
	case bool:
		return scalar{kind: scalarBool, b: x}, nil
	case string:
		return scalar{kind: scalarString, s: x}, nil
	case json.Number:
		n, err := numberFromJSON(x)
		if err != nil {
			return scalar{}, fmt.Errorf("value: %w", err)
		}
		return scalar{kind: scalarNumber, n: n}, nil
	}
	return scalar{}, fmt.Errorf("value must be null, a bool, a string or a number, got %s", raw)
}

// compareValue compares a payload value with a constant. equal is
// meaningful when comparable; order (-1, 0, +1) only when ordered (numbers
// with numbers, strings with strings, NaN excluded).
func compareValue(v any, c scalar) (equal, comparable bool, order int, ordered bool) {
	switch x := v.(type) {
	case nil:
		return c.kind == scalarNull, c.kind == scalarNull, 0, false
	case bool:
		if c.kind != scalarBool {
			return false, false, 0, false
		}
		return x == c.b, true, 0, false
	case string:
		if c.kind != scalarString {
			return false, false, 0, false
		}
		o := strings.Compare(x, c.s)
		return o == 0, true, o, true
	case json.Number:
		if c.kind != scalarNumber {
			return false, false, 0, false
		}
		n, ok := payloadNumber(x)
		if !ok {
			return false, false, 0, false
		}
		o, ok := compareNumbers(n, c.n)
		return ok && o == 0, ok, o, ok
	}
	return false, false, 0, false // arrays and objects compare with nothing
}
