package shard

import (
	"math"
	"reflect"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func testPolicy() Policy {
	return Policy{
		MinShards: 2, MaxShards: 4,
		FillRatioThreshold: 0.8, PushLatencyThreshold: 50 * time.Millisecond,
		FlushLatencyThreshold: 200 * time.Millisecond, UnderutilizedThreshold: 0.1,
		Cooldown: 10 * time.Second, ScaleDownDelay: time.Minute,
	}
}

func TestDecideTable(t *testing.T) {
	busy := func(id uint16) ShardLoad { return ShardLoad{ID: id, FillRatio: 0.9, Removable: id >= 2} }
	mid := func(id uint16) ShardLoad { return ShardLoad{ID: id, FillRatio: 0.5, Removable: id >= 2} }
	idle := func(id uint16) ShardLoad { return ShardLoad{ID: id, FillRatio: 0.01, Removable: id >= 2} }
	cases := []struct {
		name   string
		st     ScalingState
		loads  []ShardLoad
		now    time.Time
		want   Action
		shard  uint16
		reason string
	}{
		{name: "steady", loads: []ShardLoad{mid(0), mid(1)}, now: t0, want: None},
		{name: "fill ratio scales up", loads: []ShardLoad{mid(0), busy(1)}, now: t0, want: ScaleUp},
		{name: "push latency scales up", loads: []ShardLoad{mid(0), {ID: 1, FillRatio: 0.5, PushLatency: 60 * time.Millisecond}}, now: t0, want: ScaleUp},
		{name: "flush latency scales up", loads: []ShardLoad{mid(0), {ID: 1, FillRatio: 0.5, FlushLatency: time.Second}}, now: t0, want: ScaleUp},
		{name: "at max no scale up", loads: []ShardLoad{busy(0), busy(1), busy(2), busy(3)}, now: t0, want: None},
		{name: "cooldown blocks", st: ScalingState{LastScale: t0.Add(-5 * time.Second)}, loads: []ShardLoad{busy(0), busy(1)}, now: t0, want: None, reason: "cooldown"},
		{name: "cooldown over", st: ScalingState{LastScale: t0.Add(-10 * time.Second)}, loads: []ShardLoad{busy(0), busy(1)}, now: t0, want: ScaleUp},
		{name: "idle but delay not reached",
			st:    ScalingState{IdleSince: map[uint16]time.Time{2: t0.Add(-59 * time.Second)}},
			loads: []ShardLoad{mid(0), mid(1), idle(2)}, now: t0, want: None},
		{name: "idle for the whole delay scales down",
			st:    ScalingState{IdleSince: map[uint16]time.Time{2: t0.Add(-time.Minute)}},
			loads: []ShardLoad{mid(0), mid(1), idle(2)}, now: t0, want: ScaleDown, shard: 2},
		{name: "base shards never drained",
			st:    ScalingState{IdleSince: map[uint16]time.Time{0: t0.Add(-time.Hour), 1: t0.Add(-time.Hour)}},
			loads: []ShardLoad{idle(0), idle(1), mid(2)}, now: t0, want: None},
		{name: "never below min",
			st:    ScalingState{IdleSince: map[uint16]time.Time{2: t0.Add(-time.Hour)}},
			loads: []ShardLoad{idle(2), mid(0)}, now: t0, want: None},
		{name: "longest idle goes first",
			st:    ScalingState{IdleSince: map[uint16]time.Time{2: t0.Add(-2 * time.Minute), 3: t0.Add(-5 * time.Minute)}},
			loads: []ShardLoad{mid(0), mid(1), idle(2), idle(3)}, now: t0, want: ScaleDown, shard: 3},
		{name: "equal idle picks highest id",
			st:    ScalingState{IdleSince: map[uint16]time.Time{2: t0.Add(-2 * time.Minute), 3: t0.Add(-2 * time.Minute)}},
			loads: []ShardLoad{mid(0), mid(1), idle(2), idle(3)}, now: t0, want: ScaleDown, shard: 3},
		{name: "busy wins over idle",
			st:    ScalingState{IdleSince: map[uint16]time.Time{2: t0.Add(-time.Hour)}},
			loads: []ShardLoad{busy(0), mid(1), idle(2)}, now: t0, want: ScaleUp},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := c.st.clone()
			d, next := Decide(testPolicy(), c.st, c.loads, c.now)
			if d.Action != c.want || (c.want == ScaleDown && d.Shard != c.shard) {
				t.Fatalf("Decide = %+v, want %s shard %d", d, c.want, c.shard)
			}
			if c.reason != "" && d.Reason != c.reason {
				t.Fatalf("reason %q, want %q", d.Reason, c.reason)
			}
			if !reflect.DeepEqual(before, c.st) {
				t.Fatal("Decide modified its input state")
			}
			if d.Action != None && !next.LastScale.Equal(c.now) {
				t.Fatalf("LastScale = %v after %s, want now", next.LastScale, d.Action)
			}
		})
	}
}

// The scale-down delay is honoured across evaluations: a shard that turns
// idle is drained only once it has stayed idle for ScaleDownDelay, and a
// busy blip restarts the clock.
func TestScaleDownDelayHonoured(t *testing.T) {
	p := testPolicy()
	var st ScalingState
	loads := func(fill float64) []ShardLoad {
		return []ShardLoad{{ID: 0, FillRatio: 0.5}, {ID: 1, FillRatio: 0.5}, {ID: 2, FillRatio: fill, Removable: true}}
	}
	step := 10 * time.Second
	now := t0
	var d Decision
	for i := 0; i < 3; i++ { // idle 0s..20s
		d, st = Decide(p, st, loads(0), now)
		if d.Action != None {
			t.Fatalf("t+%s: %s before the delay", now.Sub(t0), d.Action)
		}
		now = now.Add(step)
	}
	d, st = Decide(p, st, loads(0.5), now) // blip at 30s resets
	if _, idle := st.IdleSince[2]; idle || d.Action != None {
		t.Fatal("busy sample did not reset the idle clock")
	}
	restart := now.Add(step)
	for now = restart; now.Sub(restart) < p.ScaleDownDelay; now = now.Add(step) {
		d, st = Decide(p, st, loads(0), now)
		if d.Action != None {
			t.Fatalf("scaled down after %s idle, delay is %s", now.Sub(restart), p.ScaleDownDelay)
		}
	}
	d, _ = Decide(p, st, loads(0), now)
	if d.Action != ScaleDown || d.Shard != 2 {
		t.Fatalf("after %s idle: %+v, want ScaleDown shard 2", now.Sub(restart), d)
	}
}

// Release note: "velocity_samples VecDeque bounded only by time, not count".
func TestWindowBoundedByCountAndAge(t *testing.T) {
	var w Window
	for i := 0; i < 100; i++ {
		w.Add(Sample{At: t0, FillRatio: 1}, time.Hour, 16)
	}
	if w.Len() != 16 {
		t.Fatalf("burst of 100 same-instant samples kept %d, want the cap 16", w.Len())
	}
	var unset Window
	for i := 0; i < 3*DefaultMaxSamples; i++ {
		unset.Add(Sample{At: t0}, 0, 0)
	}
	if unset.Len() != DefaultMaxSamples {
		t.Fatalf("window with no limits kept %d samples, want %d", unset.Len(), DefaultMaxSamples)
	}
	w.Add(Sample{At: t0.Add(2 * time.Hour), FillRatio: 0.5}, time.Hour, 16)
	if w.Len() != 1 || w.Mean().FillRatio != 0.5 {
		t.Fatalf("after the window passed: len %d mean %.2f, want 1 and 0.5", w.Len(), w.Mean().FillRatio)
	}
	w.Add(Sample{At: t0.Add(2*time.Hour + time.Second), FillRatio: 0.1, PushLatency: 4 * time.Millisecond}, time.Hour, 16)
	if m := w.Mean(); math.Abs(m.FillRatio-0.3) > 1e-9 || m.PushLatency != 2*time.Millisecond {
		t.Fatalf("mean = %+v, want fill 0.3 push 2ms", m)
	}
}
