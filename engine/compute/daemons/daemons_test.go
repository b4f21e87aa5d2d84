package daemons

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/compute"
)

func build(t *testing.T, kind, config string) compute.MeshDaemon {
	t.Helper()
	d, err := Builtins().New(kind, "d", []byte(config))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func process(t testing.TB, d compute.MeshDaemon, evs ...compute.Event) [][]byte {
	t.Helper()
	var out [][]byte
	for i, ev := range evs {
		ev.Seq = uint64(i)
		o, err := d.Process(ev)
		if err != nil {
			t.Fatalf("process %d: %v", i, err)
		}
		out = append(out, o...)
	}
	return out
}

func TestBuiltinsRegistered(t *testing.T) {
	got := Builtins().List()
	if fmt.Sprint(got) != "[counter sum tasks]" {
		t.Fatalf("built-in kinds = %v", got)
	}
}

func TestCounterCountsPerKey(t *testing.T) {
	d := build(t, KindCounter, `{"keyField":"user"}`)
	process(t, d,
		compute.Event{Key: []byte("a")},
		compute.Event{Payload: []byte(`{"user":"a"}`)},
		compute.Event{Payload: []byte(`{"user":"b"}`)},
		compute.Event{Payload: []byte(`{"user":7}`)},
		compute.Event{Payload: []byte(`not json`)},
	)
	c := d.(*Counter)
	if c.Count("a") != 2 || c.Count("b") != 1 || c.Count("7") != 1 || c.state.Malformed != 1 {
		t.Fatalf("counts %v malformed %d", c.state.Counts, c.state.Malformed)
	}
}

func TestSumTumblingWindowEmitsClosedWindow(t *testing.T) {
	d := build(t, KindSum, `{"field":"amount","window":"1m"}`)
	min := int64(time.Minute)
	out := process(t, d,
		compute.Event{Key: []byte("k"), Time: 10, Payload: []byte(`{"amount":2}`)},
		compute.Event{Key: []byte("k"), Time: min - 1, Payload: []byte(`{"amount":3.5}`)},
		compute.Event{Key: []byte("j"), Time: 5, Payload: []byte(`{"amount":1}`)},
		compute.Event{Key: []byte("k"), Time: min, Payload: []byte(`{"amount":10}`)},  // closes [0,1m)
		compute.Event{Key: []byte("k"), Time: 30, Payload: []byte(`{"amount":100}`)},  // late
		compute.Event{Key: []byte("k"), Time: min, Payload: []byte(`{"amount":"x"}`)}, // malformed
	)
	if len(out) != 1 {
		t.Fatalf("emitted %d windows, want 1", len(out))
	}
	var w WindowTotal
	if err := json.Unmarshal(out[0], &w); err != nil {
		t.Fatal(err)
	}
	if w.Key != "k" || w.Start != 0 || w.End != min || w.Sum != 5.5 || w.Count != 2 {
		t.Fatalf("closed window %+v", w)
	}
	s := d.(*Sum)
	open, _ := s.Open("k")
	if open.Start != min || open.Sum != 10 || s.state.Late != 1 || s.state.Malformed != 1 {
		t.Fatalf("open %+v late %d malformed %d", open, s.state.Late, s.state.Malformed)
	}
}

func TestSumRejectsBadConfig(t *testing.T) {
	for _, cfg := range []string{`{}`, `{"field":"a"}`, `{"field":"a","window":"-1s"}`, `{`} {
		if _, err := Builtins().New(KindSum, "d", []byte(cfg)); err == nil {
			t.Errorf("config %s accepted", cfg)
		}
	}
}

func TestTasksCRUD(t *testing.T) {
	d := build(t, KindTasks, "")
	process(t, d,
		compute.Event{Time: 1, Payload: []byte(`{"op":"create","id":1,"title":"a"}`)},
		compute.Event{Time: 2, Payload: []byte(`{"op":"create","id":2,"title":"b"}`)},
		compute.Event{Time: 3, Payload: []byte(`{"op":"rename","id":1,"title":"a2"}`)},
		compute.Event{Time: 4, Payload: []byte(`{"op":"complete","id":1}`)},
		compute.Event{Time: 5, Payload: []byte(`{"op":"delete","id":2}`)},
		compute.Event{Time: 6, Payload: []byte(`{"op":"rename","id":9,"title":"ghost"}`)},
		compute.Event{Time: 7, Payload: []byte(`{"op":"archive","id":1}`)},
	)
	tk := d.(*Tasks)
	got, ok := tk.Get(1)
	if !ok || got.Title != "a2" || got.Status != TaskCompleted || got.CreatedNs != 1 || got.UpdatedNs != 4 {
		t.Fatalf("task 1 = %+v", got)
	}
	if _, ok := tk.Get(2); ok {
		t.Fatal("deleted task 2 still present")
	}
	if _, ok := tk.Get(9); ok || tk.state.Unknown != 1 {
		t.Fatalf("rename of unknown id created a task, or unknown op not counted (%d)", tk.state.Unknown)
	}
}

func TestSnapshotRestoreReproducesState(t *testing.T) {
	cases := map[string]struct {
		config string
		evs    []compute.Event
	}{
		KindCounter: {"", []compute.Event{{Key: []byte("a")}, {Key: []byte("b")}, {Key: []byte("a")}}},
		KindSum:     {`{"field":"v","window":"1s"}`, []compute.Event{{Key: []byte("a"), Payload: []byte(`{"v":1}`)}, {Key: []byte("a"), Time: 2e9, Payload: []byte(`{"v":2}`)}}},
		KindTasks:   {"", []compute.Event{{Payload: []byte(`{"op":"create","id":3,"title":"x"}`)}}},
	}
	for kind, tc := range cases {
		a := build(t, kind, tc.config)
		process(t, a, tc.evs...)
		snap, err := a.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		b := build(t, kind, tc.config)
		if err := b.Restore(snap); err != nil {
			t.Fatalf("%s restore: %v", kind, err)
		}
		again, _ := b.Snapshot()
		if !bytes.Equal(snap, again) {
			t.Fatalf("%s: restored snapshot differs:\n%s\n%s", kind, snap, again)
		}
		// A bad restore leaves the state unchanged.
		if err := b.Restore([]byte("{bad")); err == nil {
			t.Fatalf("%s: bad snapshot accepted", kind)
		}
		if after, _ := b.Snapshot(); !bytes.Equal(after, snap) {
			t.Fatalf("%s: failed restore changed state", kind)
		}
	}
}

func TestValidateBuiltinConfigs(t *testing.T) {
	if err := Validate(KindSum, []byte(`{"field":"a","window":"5s"}`)); err != nil {
		t.Fatalf("valid sum config refused: %v", err)
	}
	if err := Validate(KindSum, []byte(`{"field":"a"}`)); err == nil {
		t.Fatal("sum config without a window accepted")
	}
	if err := Validate("histogram", nil); !errors.Is(err, compute.ErrUnknownKind) {
		t.Fatalf("unknown kind: %v", err)
	}
}

func FuzzCounterRestore(f *testing.F) {
	d, _ := NewCounter("d", nil)
	process(f, d, compute.Event{Key: []byte("a")}, compute.Event{Key: []byte("b")}, compute.Event{Payload: []byte("x")})
	snap, _ := d.Snapshot()
	f.Add(snap)
	f.Add([]byte{'C', 1, 0, 0})
	f.Add([]byte{'C', 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, _ := NewCounter("d", nil)
		if err := c.Restore(b); err != nil {
			return
		}
		// Whatever decodes re-encodes canonically, and that round-trips.
		again, _ := c.Snapshot()
		c2, _ := NewCounter("d", nil)
		if err := c2.Restore(again); err != nil {
			t.Fatalf("re-encoded snapshot refused: %v", err)
		}
		if third, _ := c2.Snapshot(); !bytes.Equal(third, again) {
			t.Fatalf("snapshot not stable across restore:\n%x\n%x", again, third)
		}
	})
}

func TestSumTimeFieldKeepsNanosecondPrecision(t *testing.T) {
	d := build(t, KindSum, `{"field":"v","window":"1ns","timeField":"ts"}`)
	// Adjacent nanoseconds near 2^62 collapse to one float64; they must
	// still be two windows.
	out := process(t, d,
		compute.Event{Key: []byte("k"), Payload: []byte(`{"v":1,"ts":4611686018427387904}`)},
		compute.Event{Key: []byte("k"), Payload: []byte(`{"v":1,"ts":4611686018427387905}`)},
	)
	if len(out) != 1 {
		t.Fatalf("emitted %d windows, want 1 (adjacent nanoseconds are distinct windows)", len(out))
	}
}

func TestStateViewDecodesEachBuiltinSnapshot(t *testing.T) {
	cases := []struct {
		kind, config string
		payloads     []string
		want         string
	}{
		{KindCounter, `{"keyField":"user"}`, []string{`{"user":"a"}`, `{"user":"b"}`, `{"user":"a"}`, `not json`},
			`{"counts":{"a":2,"b":1},"malformed":1}`},
		{KindSum, `{"field":"n","window":"1s","keyField":"user","timeField":"ts"}`, []string{`{"user":"a","n":2,"ts":5}`, `{"user":"a","n":3,"ts":6}`},
			`{"open":{"a":{"key":"a","start":0,"end":1000000000,"sum":5,"count":2}},"late":0,"malformed":0}`},
		{KindTasks, `{}`, []string{`{"op":"create","id":7,"title":"x","nowNs":1}`},
			`{"tasks":{"7":{"id":7,"title":"x","status":"pending","createdNs":1,"updatedNs":1}},"unknown":0,"malformed":0}`},
	}
	for _, c := range cases {
		t.Run(c.kind, func(t *testing.T) {
			d, err := Builtins().New(c.kind, "d", []byte(c.config))
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range c.payloads {
				if _, err := d.Process(compute.Event{Seq: uint64(i), Payload: []byte(p)}); err != nil {
					t.Fatal(err)
				}
			}
			snap, err := d.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			v, err := StateView(c.kind, []byte(c.config), snap)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(v)
			if string(got) != c.want {
				t.Fatalf("view %s, want %s", got, c.want)
			}
			live, _ := json.Marshal(d.(interface{ State() any }).State())
			if string(live) != c.want {
				t.Fatalf("live State %s, want %s", live, c.want)
			}
		})
	}
	if _, err := StateView(KindCounter, nil, []byte("garbage")); err == nil {
		t.Fatal("StateView accepted a malformed counter snapshot")
	}
}
