package adapter

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
)

// Position is a resume point in one shard's store: the first entry a poll
// starting here may return. Stores with a single sequence (RedEX,
// JetStream) use Lo only; Redis stream ids ("ms-seq") use both. Positions
// order by (Hi, Lo); the zero Position is the beginning of every shard.
type Position struct {
	Hi, Lo uint64
}

// Compare orders positions: -1 if p < q, 0 if equal, +1 if p > q.
func (p Position) Compare(q Position) int {
	if c := cmp.Compare(p.Hi, q.Hi); c != 0 {
		return c
	}
	return cmp.Compare(p.Lo, q.Lo)
}

// Less reports p < q.
func (p Position) Less(q Position) bool { return p.Compare(q) < 0 }

// IsZero reports whether p is the beginning.
func (p Position) IsZero() bool { return p == Position{} }

// Next returns the position just after p, saturating at the largest
// position instead of wrapping to the beginning.
func (p Position) Next() Position {
	if p.Lo != ^uint64(0) {
		return Position{p.Hi, p.Lo + 1}
	}
	if p.Hi != ^uint64(0) {
		return Position{p.Hi + 1, 0}
	}
	return p
}

// Max returns the later of p and q.
func (p Position) Max(q Position) Position {
	if p.Less(q) {
		return q
	}
	return p
}

// String renders p as "lo" or "hi-lo".
func (p Position) String() string {
	if p.Hi == 0 {
		return strconv.FormatUint(p.Lo, 10)
	}
	return strconv.FormatUint(p.Hi, 10) + "-" + strconv.FormatUint(p.Lo, 10)
}

// ParsePosition parses the String form.
func ParsePosition(s string) (Position, error) {
	hi, lo, found := strings.Cut(s, "-")
	if !found {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return Position{}, fmt.Errorf("parse position %q: %w", s, err)
		}
		return Position{Lo: v}, nil
	}
	h, err := strconv.ParseUint(hi, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("parse position %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("parse position %q: %w", s, err)
	}
	return Position{Hi: h, Lo: l}, nil
}
