package consumer

import (
	"encoding/base64"
	"errors"
	"math"
	"testing"

	"github.com/purplerain/mesh-operator/engine/adapter"
)

func TestCursorNeverMovesBackwards(t *testing.T) {
	var c Cursor
	if !c.Advance(1, adapter.Position{Lo: 10}) {
		t.Fatal("first advance refused")
	}
	for _, p := range []adapter.Position{{Lo: 9}, {Lo: 10}, {}} {
		if c.Advance(1, p) {
			t.Fatalf("advance to %v moved the cursor back from 10", p)
		}
	}
	if c.Position(1) != (adapter.Position{Lo: 10}) {
		t.Fatalf("position = %v", c.Position(1))
	}
	if !c.Advance(1, adapter.Position{Hi: 1}) || c.Position(1) != (adapter.Position{Hi: 1}) {
		t.Fatal("two-part position did not advance")
	}
}

// Release note: "Cursor::encode returns empty cursor on serialization failure".
func TestCursorEncodeNeverEmpty(t *testing.T) {
	var c Cursor
	s, err := c.Encode()
	if err != nil || s == "" {
		t.Fatalf("empty cursor encoded as %q, %v; want a non-empty token", s, err)
	}
	var nilCursor *Cursor
	if s, err := nilCursor.Encode(); err == nil || s != "" {
		t.Fatalf("nil cursor encoded as %q, %v; want an error", s, err)
	}
	d, err := Decode(s)
	if err != nil || len(d.Shards()) != 0 {
		t.Fatalf("decode of empty encoding: %v %v", d, err)
	}
}

func TestCursorRoundTrip(t *testing.T) {
	var c Cursor
	c.Advance(0, adapter.Position{Lo: 1})
	c.Advance(7, adapter.Position{Hi: 1700000000000, Lo: 3})
	c.Advance(math.MaxUint16, adapter.Position{Hi: math.MaxUint64, Lo: math.MaxUint64})
	s, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint16{0, 7, math.MaxUint16} {
		if d.Position(id) != c.Position(id) {
			t.Fatalf("shard %d: %v after round trip, want %v", id, d.Position(id), c.Position(id))
		}
	}
}

func TestCursorDecodeRejectsNonCanonical(t *testing.T) {
	enc := func(b ...byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	cases := map[string]string{
		"not base64":     "!!!",
		"wrong version":  enc(2, 0),
		"version zero":   enc(0),
		"truncated":      enc(1, 1, 0),
		"descending ids": enc(1, 2, 0, 5, 0, 1, 0, 4, 0, 1),
		"duplicate ids":  enc(1, 2, 0, 5, 0, 1, 0, 5, 0, 1),
		"trailing bytes": enc(1, 0, 9),
		"huge count":     enc(1, 0xff, 0xff, 0xff, 0xff, 0x0f),
	}
	for name, s := range cases {
		if _, err := Decode(s); !errors.Is(err, ErrBadCursor) {
			t.Errorf("%s: Decode(%q) = %v, want ErrBadCursor", name, s, err)
		}
	}
}

func FuzzDecodeCursor(f *testing.F) {
	var c Cursor
	c.Advance(3, adapter.Position{Lo: 42})
	s, _ := c.Encode()
	f.Add(s)
	f.Add("")
	f.Add("AQA")
	f.Add("AQEAAwAq")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := Decode(s)
		if err != nil {
			return
		}
		again, err := d.Encode()
		if err != nil || again == "" {
			t.Fatalf("decoded cursor does not re-encode: %q %v", again, err)
		}
		d2, err := Decode(again)
		if err != nil {
			t.Fatalf("re-encoded cursor does not decode: %v", err)
		}
		for _, id := range d.Shards() {
			if d.Position(id) != d2.Position(id) {
				t.Fatalf("shard %d changed across round trip", id)
			}
		}
		if s != "" && again != s {
			t.Fatalf("non-canonical input %q accepted (canonical %q)", s, again)
		}
	})
}
