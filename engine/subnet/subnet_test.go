package subnet

import (
	"errors"
	"testing"
)

func TestLevelsPackRegionFirst(t *testing.T) {
	id := MustFromLevels(3, 7, 1, 4)
	if uint32(id) != 0x03070104 {
		t.Fatalf("packed %#08x", uint32(id))
	}
	if id.Level(0) != 3 || id.Level(1) != 7 || id.Level(2) != 1 || id.Level(3) != 4 || id.Level(4) != 0 || id.Level(-1) != 0 {
		t.Fatal("levels")
	}
	if id.Depth() != 4 || MustFromLevels(3, 7).Depth() != 2 || Global.Depth() != 0 {
		t.Fatal("depth")
	}
	if id.Parent() != MustFromLevels(3, 7, 1) || MustFromLevels(3).Parent() != Global || Global.Parent() != Global {
		t.Fatal("parent")
	}
}

// "Untrusted-input panics in subnet config": every constructor for
// untrusted input returns an error.
func TestUntrustedInputPanicsInSubnetConfigAreErrors(t *testing.T) {
	if _, err := FromLevels(1, 2, 3, 4, 5); !errors.Is(err, ErrTooManyLevels) {
		t.Fatalf("5 levels: %v", err)
	}
	if _, err := FromLevels(3, 0, 7); !errors.Is(err, ErrGap) {
		t.Fatalf("gap: %v", err)
	}
	if _, err := FromUint32(0x00070000); !errors.Is(err, ErrGap) {
		t.Fatalf("packed gap: %v", err)
	}
	for _, s := range []string{"0", "3.0", "256", "-1", "+1", "01", "1..2", "1.2.3.4.5", "a", " 1", "1.", ".1", "1000", "١"} {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) accepted", s)
		}
	}
	bad := []Rule{{Label: "", Level: 0, Values: map[string]uint8{"a": 1}}, {Label: "r", Level: 4, Values: map[string]uint8{"a": 1}},
		{Label: "r", Level: -1, Values: map[string]uint8{"a": 1}}, {Label: "r", Level: 0}, {Label: "r", Level: 0, Values: map[string]uint8{"a": 0}}}
	for _, r := range bad {
		if _, err := NewRule(r.Label, r.Level, r.Values); err == nil {
			t.Errorf("NewRule accepted %+v", r)
		}
		if _, err := NewPolicy([]Rule{r}); err == nil {
			t.Errorf("NewPolicy accepted %+v", r)
		}
	}
	if _, err := NewGateway(map[string][]ID{"": {Global}}); err == nil {
		t.Error("empty channel accepted")
	}
	if _, err := NewGateway(map[string][]ID{"c": {ID(0x00010000)}}); err == nil {
		t.Error("gapped export accepted")
	}
	defer func() {
		if recover() == nil {
			t.Error("MustFromLevels did not panic on a constant error")
		}
	}()
	MustFromLevels(0, 1)
}

func TestParseAndFormatRoundTrip(t *testing.T) {
	for _, c := range []struct {
		s  string
		id ID
	}{{"global", Global}, {"3", MustFromLevels(3)}, {"3.7", MustFromLevels(3, 7)}, {"255.255.255.255", 0xffffffff}, {"1.20.3", MustFromLevels(1, 20, 3)}} {
		id, err := Parse(c.s)
		if err != nil || id != c.id {
			t.Fatalf("Parse(%q) = %v, %v", c.s, id, err)
		}
		if id.String() != c.s {
			t.Fatalf("String(%#x) = %q, want %q", uint32(id), id.String(), c.s)
		}
	}
	if id, err := Parse(""); err != nil || id != Global {
		t.Fatal("empty string is Global")
	}
	var id ID
	if err := id.UnmarshalText([]byte("9.8")); err != nil || id != MustFromLevels(9, 8) {
		t.Fatal(id, err)
	}
	if err := id.UnmarshalText([]byte("9.0")); err == nil {
		t.Fatal("UnmarshalText accepted 9.0")
	}
}

func TestContainsIsAPrefixTest(t *testing.T) {
	r3, f37, v371, f38 := MustFromLevels(3), MustFromLevels(3, 7), MustFromLevels(3, 7, 1), MustFromLevels(3, 8)
	cases := []struct {
		a, b ID
		want bool
	}{
		{Global, v371, true}, {r3, v371, true}, {f37, v371, true}, {v371, v371, true},
		{v371, f37, false}, {f38, v371, false}, {r3, Global, false}, {MustFromLevels(4), f37, false},
	}
	for _, c := range cases {
		if got := c.a.Contains(c.b); got != c.want {
			t.Errorf("%v.Contains(%v) = %v", c.a, c.b, got)
		}
	}
}

func TestLabelAssignment(t *testing.T) {
	p, err := NewPolicy([]Rule{
		{Label: "region", Level: 0, Values: map[string]uint8{"eu": 1, "us": 2}},
		{Label: "fleet", Level: 1, Values: map[string]uint8{"alpha": 7}},
		{Label: "zone", Level: 0, Values: map[string]uint8{"eu-override": 9}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		labels map[string]string
		want   ID
	}{
		{map[string]string{"region": "eu", "fleet": "alpha"}, MustFromLevels(1, 7)},
		{map[string]string{"region": "us"}, MustFromLevels(2)},
		{map[string]string{"region": "mars", "other": "x"}, Global},
		{map[string]string{"region": "eu", "zone": "eu-override"}, MustFromLevels(9)}, // later rule wins
		{map[string]string{"region": "euX"}, Global},                                  // exact value match only
	} {
		got, err := p.Assign(c.labels)
		if err != nil || got != c.want {
			t.Errorf("Assign(%v) = %v, %v; want %v", c.labels, got, err, c.want)
		}
	}
	if _, err := p.Assign(map[string]string{"fleet": "alpha"}); !errors.Is(err, ErrGap) {
		t.Fatalf("a fleet without a region must be refused, got %v", err)
	}
}

func TestGatewayVisibility(t *testing.T) {
	f37, v371, v372, f38, r4 := MustFromLevels(3, 7), MustFromLevels(3, 7, 1), MustFromLevels(3, 7, 2), MustFromLevels(3, 8), MustFromLevels(4)
	g, err := NewGateway(map[string][]ID{"alerts": {r4}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		ch           string
		origin, dest ID
		v            Visibility
		want         bool
	}{
		{"x", v371, v371, Local, true},
		{"x", f37, v371, Local, true}, // below the origin
		{"x", v371, v372, Local, false},
		{"x", v371, v372, ParentVisible, true}, // sibling
		{"x", v371, f38, ParentVisible, false}, // cousin
		{"x", f37, f38, ParentVisible, true},
		{"alerts", v371, MustFromLevels(4, 1), Exported, true},
		{"alerts", v371, f38, Exported, false},
		{"other", v371, r4, Exported, false},
		{"x", v371, r4, GlobalVisible, true},
		{"x", v371, v371, Visibility(99), false},
	}
	for _, c := range cases {
		if got := g.Visible(c.ch, c.origin, c.dest, c.v); got != c.want {
			t.Errorf("Visible(%s, %v→%v, %v) = %v", c.ch, c.origin, c.dest, c.v, got)
		}
	}
	for _, v := range []Visibility{Local, ParentVisible, Exported, GlobalVisible} {
		if got, err := ParseVisibility(v.String()); err != nil || got != v {
			t.Fatal(v, err)
		}
	}
	if _, err := ParseVisibility("Everywhere"); err == nil {
		t.Fatal("unknown visibility accepted")
	}
}

// FuzzParse: Parse never panics, and what it accepts round-trips through
// String and the packed form.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"global", "", "3", "3.7.1.4", "255.255.255.255", "3.0", "1.2.3.4.5", "01", "256", "a.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err != nil {
			return
		}
		back, err := Parse(id.String())
		if err != nil || back != id {
			t.Fatalf("%q -> %v -> %v, %v", s, id, back, err)
		}
		if again, err := FromUint32(uint32(id)); err != nil || again != id {
			t.Fatalf("packed form of %q refused: %v", s, err)
		}
		if !Global.Contains(id) || !id.Contains(id) || !id.Parent().Contains(id) {
			t.Fatalf("hierarchy broken for %v", id)
		}
	})
}
