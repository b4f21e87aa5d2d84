package rules

import (
	"math"
	"testing"
)

func num(t *testing.T, s string) number {
	t.Helper()
	n, err := parseNumber(s)
	if err != nil {
		t.Fatalf("parseNumber(%q): %v", s, err)
	}
	return n
}

// "Lossy as_f64 for all numeric ordering in rules": integers above 2^53
// order exactly, mixed signed/unsigned and integer/float sign-aware.
func TestLossyAsF64NumericOrderingIsExact(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"9007199254740993", "9007199254740992", 1},   // 2^53+1 vs 2^53: equal as float64
		{"9007199254740993", "9007199254740992.0", 1}, // int vs float at 2^53
		{"9007199254740992.0", "9007199254740993", -1},
		{"9223372036854775807", "9223372036854775806", 1},
		{"9223372036854775807", "9223372036854775808", -1},   // MaxInt64 vs 2^63 (uint)
		{"9223372036854775808", "9223372036854775808.0", 0},  // 2^63 uint vs float 2^63
		{"9223372036854775807", "9223372036854775808.0", -1}, // MaxInt64 vs float 2^63
		{"18446744073709551615", "18446744073709551614", 1},
		{"18446744073709551615", "18446744073709551616.0", -1}, // MaxUint64 vs float 2^64
		{"18446744073709551615", "1e300", -1},
		{"-1", "18446744073709551615", -1}, // negative vs unsigned
		{"18446744073709551615", "-1", 1},
		{"-9223372036854775808", "9223372036854775808", -1},
		{"-9223372036854775808", "-9223372036854775808.0", 0},
		{"-9223372036854775808", "-9223372036854777856.0", 1}, // below -2^63
		{"-1", "-0.5", -1},
		{"0", "-0.5", 1},
		{"0", "0.5", -1},
		{"1", "1.0", 0},
		{"1", "0.9999999999999999", 1},
		{"12345678901234567", "12345678901234567.5", -1},
		{"18446744073709551615", "0.5", 1},
		{"-0.0", "0", 0},
		{"1.5", "2.5", -1},
	}
	for _, c := range cases {
		got, ok := compareNumbers(num(t, c.a), num(t, c.b))
		if !ok || got != c.want {
			t.Errorf("compare(%s, %s) = %d, %v; want %d", c.a, c.b, got, ok, c.want)
		}
		back, ok := compareNumbers(num(t, c.b), num(t, c.a))
		if !ok || back != -c.want {
			t.Errorf("compare(%s, %s) = %d, %v; want %d (antisymmetry)", c.b, c.a, back, ok, -c.want)
		}
	}
}

func TestNaNIsUnordered(t *testing.T) {
	nan := number{kind: kindFloat, f: math.NaN()}
	for _, other := range []number{nan, {kind: kindInt, i: -1}, {kind: kindUint, u: math.MaxUint64}, {kind: kindFloat, f: 1}} {
		if _, ok := compareNumbers(nan, other); ok {
			t.Errorf("NaN ordered against %+v", other)
		}
		if _, ok := compareNumbers(other, nan); ok {
			t.Errorf("%+v ordered against NaN", other)
		}
	}
}

func TestInfinityOrdersAgainstIntegers(t *testing.T) {
	inf := number{kind: kindFloat, f: math.Inf(1)}
	ninf := number{kind: kindFloat, f: math.Inf(-1)}
	for _, n := range []number{{kind: kindInt, i: math.MaxInt64}, {kind: kindInt, i: math.MinInt64}, {kind: kindUint, u: math.MaxUint64}} {
		if c, ok := compareNumbers(n, inf); !ok || c != -1 {
			t.Errorf("%+v vs +Inf = %d, %v", n, c, ok)
		}
		if c, ok := compareNumbers(n, ninf); !ok || c != 1 {
			t.Errorf("%+v vs -Inf = %d, %v", n, c, ok)
		}
	}
}

func TestNumbersOutOfFloatRangeAreRefused(t *testing.T) {
	if _, err := parseNumber("1e400"); err == nil {
		t.Fatal("1e400 accepted")
	}
}
