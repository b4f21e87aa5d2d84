package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// numKind says which representation a number holds.
type numKind uint8

const (
	kindInt   numKind = iota // fits int64
	kindUint                 // above MaxInt64, fits uint64
	kindFloat                // has a fraction or exponent, or is out of integer range
)

// number is a JSON number kept in the narrowest exact representation.
type number struct {
	kind numKind
	i    int64
	u    uint64
	f    float64
}

// parseNumber converts a JSON number literal. Integers that fit int64 or
// uint64 stay integers; anything else is a float64 (which must be finite).
func parseNumber(s string) (number, error) {
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return number{kind: kindInt, i: i}, nil
	}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return number{kind: kindUint, u: u}, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return number{}, fmt.Errorf("number %q out of range: %w", s, err)
	}
	return number{kind: kindFloat, f: f}, nil
}

func numberFromJSON(n json.Number) (number, error) { return parseNumber(string(n)) }

// payloadNumber reads a number from an event. A literal beyond float64's
// range is still ordered correctly: it becomes the infinity of its sign
// (greater or less than every rule constant, equal to none), where a rule
// constant like that is refused when the rule is compiled.
func payloadNumber(n json.Number) (number, bool) {
	v, err := parseNumber(string(n))
	if err == nil {
		return v, true
	}
	if f, ferr := strconv.ParseFloat(string(n), 64); math.IsInf(f, 0) && errors.Is(ferr, strconv.ErrRange) {
		return number{kind: kindFloat, f: f}, true
	}
	return number{}, false
}

// two63 and two64 are 2^63 and 2^64 as float64 (both exact).
const (
	two63 = 9223372036854775808.0
	two64 = 18446744073709551616.0
)

// compareNumbers orders a and b exactly: -1, 0 or +1, and ok false when
// they are unordered (a NaN is involved).
func compareNumbers(a, b number) (int, bool) {
	switch {
	case a.kind == kindFloat && b.kind == kindFloat:
		if math.IsNaN(a.f) || math.IsNaN(b.f) {
			return 0, false
		}
		return cmp3(a.f < b.f, a.f > b.f), true
	case a.kind == kindFloat:
		c, ok := compareIntFloat(b, a.f)
		return -c, ok
	case b.kind == kindFloat:
		return compareIntFloat(a, b.f)
	case a.kind == kindInt && b.kind == kindInt:
		return cmp3(a.i < b.i, a.i > b.i), true
	case a.kind == kindUint && b.kind == kindUint:
		return cmp3(a.u < b.u, a.u > b.u), true
	case a.kind == kindInt: // b uint, which is above MaxInt64 or at least >= 0
		if a.i < 0 {
			return -1, true
		}
		u := uint64(a.i)
		return cmp3(u < b.u, u > b.u), true
	default: // a uint, b int
		if b.i < 0 {
			return 1, true
		}
		u := uint64(b.i)
		return cmp3(a.u < u, a.u > u), true
	}
}

// compareIntFloat orders the integer n against f without converting n to
// float64 (which would round above 2^53): it compares n with f's integral
// part as an integer, then lets f's fraction break a tie.
func compareIntFloat(n number, f float64) (int, bool) {
	if math.IsNaN(f) {
		return 0, false
	}
	t := math.Trunc(f)
	frac := f - t // 0 for infinities is NaN; handled by the range checks first
	if n.kind == kindInt {
		switch {
		case f >= two63:
			return -1, true
		case f < -two63:
			return 1, true
		}
		ti := int64(t) // exact: t is integral and in [-2^63, 2^63)
		if n.i != ti {
			return cmp3(n.i < ti, n.i > ti), true
		}
	} else {
		switch {
		case f >= two64:
			return -1, true
		case f < 0:
			return 1, true
		}
		tu := uint64(t)
		if n.u != tu {
			return cmp3(n.u < tu, n.u > tu), true
		}
	}
	// Integral parts equal: the fraction decides (n has none).
	return cmp3(frac > 0, frac < 0), true
}

func cmp3(less, greater bool) int {
	switch {
	case less:
		return -1
	case greater:
		return 1
	}
	return 0
}
