package subnet

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Levels is the depth of the hierarchy: region, fleet, vehicle, subsystem.
const Levels = 4

// ID is a subnet: four 8-bit levels packed MSB-first into a uint32.
type ID uint32

// Global is the root: no subnet restriction.
const Global ID = 0

// Errors of the fallible constructors.
var (
	ErrTooManyLevels = errors.New("subnet: more than 4 levels")
	ErrGap           = errors.New("subnet: a specified level follows an unspecified (0) one")
	ErrSyntax        = errors.New("subnet: invalid syntax")
)

// FromLevels packs up to four levels, region first. Trailing zeros mean
// "not specified"; a non-zero level after a zero one is refused.
func FromLevels(levels ...uint8) (ID, error) {
	if len(levels) > Levels {
		return 0, fmt.Errorf("%w: got %d", ErrTooManyLevels, len(levels))
	}
	var id uint32
	for i, l := range levels {
		id |= uint32(l) << (8 * (Levels - 1 - i))
	}
	return FromUint32(id)
}

// MustFromLevels is FromLevels for constants; it panics on invalid input.
// Never call it with untrusted input.
func MustFromLevels(levels ...uint8) ID {
	id, err := FromLevels(levels...)
	if err != nil {
		panic(err)
	}
	return id
}

// FromUint32 validates a packed ID received from outside (wire, config).
func FromUint32(v uint32) (ID, error) {
	id := ID(v)
	zero := false
	for i := range Levels {
		if id.Level(i) == 0 {
			zero = true
		} else if zero {
			return 0, fmt.Errorf("%w: %#08x", ErrGap, v)
		}
	}
	return id, nil
}

// Level returns level n (0 region … 3 subsystem); 0 for n out of range.
func (id ID) Level(n int) uint8 {
	if n < 0 || n >= Levels {
		return 0
	}
	return uint8(id >> (8 * (Levels - 1 - n)))
}

// Depth is the number of specified levels (0 for Global).
func (id ID) Depth() int {
	d := 0
	for d < Levels && id.Level(d) != 0 {
		d++
	}
	return d
}

// mask keeps the top depth levels.
func mask(depth int) ID {
	if depth <= 0 {
		return 0
	}
	return ^ID(0) << (8 * (Levels - depth))
}

// Parent strips the deepest level; Global's parent is Global.
func (id ID) Parent() ID {
	d := id.Depth()
	if d == 0 {
		return Global
	}
	return id & mask(d-1)
}

// Contains says whether other is id or below it.
func (id ID) Contains(other ID) bool {
	return other&mask(id.Depth()) == id
}

// IsGlobal says whether id is the root.
func (id ID) IsGlobal() bool { return id == Global }

// String formats id as dotted levels ("3.7.1"), or "global".
func (id ID) String() string {
	d := id.Depth()
	if d == 0 {
		return "global"
	}
	var b strings.Builder
	for i := range d {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(strconv.Itoa(int(id.Level(i))))
	}
	return b.String()
}

// Parse reads the String form: "global" (or "") or one to four dot-separated
// levels, each a decimal 1..255 without sign or leading zeros.
func Parse(s string) (ID, error) {
	if s == "" || s == "global" {
		return Global, nil
	}
	parts := strings.Split(s, ".")
	if len(parts) > Levels {
		return 0, fmt.Errorf("%w: %q", ErrTooManyLevels, s)
	}
	levels := make([]uint8, len(parts))
	for i, p := range parts {
		if p == "" || len(p) > 3 || p[0] == '0' {
			return 0, fmt.Errorf("%w: level %d of %q must be 1..255", ErrSyntax, i, s)
		}
		for _, c := range p {
			if c < '0' || c > '9' {
				return 0, fmt.Errorf("%w: level %d of %q must be 1..255", ErrSyntax, i, s)
			}
		}
		v, err := strconv.Atoi(p)
		if err != nil || v > 255 {
			return 0, fmt.Errorf("%w: level %d of %q must be 1..255", ErrSyntax, i, s)
		}
		levels[i] = uint8(v)
	}
	return FromLevels(levels...)
}

// MarshalText implements encoding.TextMarshaler (the String form).
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with Parse.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}
