package consumer

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/purplerain/mesh-operator/engine/adapter"
)

const cursorVersion = 1

// MaxEncodedCursor bounds an encoded cursor.
const MaxEncodedCursor = 1 << 20

var (
	// ErrBadCursor is returned by Decode for anything but a canonical
	// encoding.
	ErrBadCursor = errors.New("consumer: malformed cursor")
	// ErrCursorTooLarge is returned by Encode when the encoding would
	// exceed MaxEncodedCursor.
	ErrCursorTooLarge = errors.New("consumer: cursor too large")
)

// Cursor is a composite cursor: one resume position per shard. The zero
// value is a cursor at the beginning of every shard.
type Cursor struct {
	pos map[uint16]adapter.Position
}

// Position returns shard's resume position (zero if unset).
func (c *Cursor) Position(shard uint16) adapter.Position { return c.pos[shard] }

// Advance moves shard's position to p if p is later, reporting whether it
// moved. It never moves a position backwards.
func (c *Cursor) Advance(shard uint16, p adapter.Position) bool {
	if !c.pos[shard].Less(p) {
		return false
	}
	if c.pos == nil {
		c.pos = make(map[uint16]adapter.Position)
	}
	c.pos[shard] = p
	return true
}

// Shards lists the shards with a position, ascending.
func (c *Cursor) Shards() []uint16 {
	return slices.Sorted(maps.Keys(c.pos))
}

// Clone returns an independent copy.
func (c *Cursor) Clone() *Cursor { return &Cursor{pos: maps.Clone(c.pos)} }

// Encode renders the cursor as an opaque URL-safe string. It never returns
// an empty string with a nil error.
func (c *Cursor) Encode() (string, error) {
	if c == nil {
		return "", fmt.Errorf("consumer: encode nil cursor: %w", ErrBadCursor)
	}
	ids := c.Shards()
	buf := make([]byte, 0, 1+binary.MaxVarintLen64+len(ids)*(2+2*binary.MaxVarintLen64))
	buf = append(buf, cursorVersion)
	buf = binary.AppendUvarint(buf, uint64(len(ids)))
	for _, id := range ids {
		p := c.pos[id]
		buf = binary.BigEndian.AppendUint16(buf, id)
		buf = binary.AppendUvarint(buf, p.Hi)
		buf = binary.AppendUvarint(buf, p.Lo)
	}
	if base64.RawURLEncoding.EncodedLen(len(buf)) > MaxEncodedCursor {
		return "", fmt.Errorf("consumer: encode cursor of %d shards: %w", len(ids), ErrCursorTooLarge)
	}
	return base64.RawURLEncoding.EncodeToString(buf), nil
}

// Decode parses an encoded cursor; "" is the beginning of every shard.
func Decode(s string) (*Cursor, error) {
	if s == "" {
		return &Cursor{}, nil
	}
	if len(s) > MaxEncodedCursor {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadCursor, len(s))
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCursor, err)
	}
	if len(b) == 0 || b[0] != cursorVersion {
		return nil, fmt.Errorf("%w: unknown version", ErrBadCursor)
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > 1<<16 {
		return nil, fmt.Errorf("%w: bad shard count", ErrBadCursor)
	}
	b = b[k:]
	c := &Cursor{pos: make(map[uint16]adapter.Position, n)}
	prev := -1
	for i := uint64(0); i < n; i++ {
		if len(b) < 2 {
			return nil, fmt.Errorf("%w: truncated", ErrBadCursor)
		}
		id := binary.BigEndian.Uint16(b)
		if int(id) <= prev {
			return nil, fmt.Errorf("%w: shards not strictly ascending", ErrBadCursor)
		}
		prev = int(id)
		b = b[2:]
		hi, k1 := binary.Uvarint(b)
		if k1 <= 0 {
			return nil, fmt.Errorf("%w: truncated position", ErrBadCursor)
		}
		b = b[k1:]
		lo, k2 := binary.Uvarint(b)
		if k2 <= 0 {
			return nil, fmt.Errorf("%w: truncated position", ErrBadCursor)
		}
		b = b[k2:]
		c.pos[id] = adapter.Position{Hi: hi, Lo: lo}
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrBadCursor, len(b))
	}
	// Over-long varints or stray base64 bits decode to the same positions
	// but are not what Encode produces; accept exactly one spelling so
	// cursors compare by string.
	if again, err := c.Encode(); err != nil || again != s {
		return nil, fmt.Errorf("%w: not in canonical form", ErrBadCursor)
	}
	return c, nil
}
