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
		{name: "slow flush on a quiet shard is overloaded", loads: []ShardLoad{mid(0), {ID: 1, FillRatio: 0.01, FlushLatency: 200 * time.Millisecond}}, now: t0, want: ScaleUp,
			reason: "shard 1 flush latency 200ms >= 200ms"},
		{name: "flush under the threshold is not", loads: []ShardLoad{mid(0), {ID: 1, FillRatio: 0.5, FlushLatency: 199 * time.Millisecond}}, now: t0, want: None},
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

// The operator's policy: more than half of the non-draining shards must
// be overloaded, draining shards count against MaxShards but are never
// evaluated, and the event rate is a signal both ways (busy above the
// threshold, idle only far below it).
func TestDecideMajorityTable(t *testing.T) {
	p := testPolicy()
	p.MaxShards = 6
	p.OverloadedFraction = 0.5
	p.EventRateThreshold = 100
	hot := func(id uint16) ShardLoad { return ShardLoad{ID: id, EventRate: 150, Removable: id >= 2} }
	warm := func(id uint16) ShardLoad { return ShardLoad{ID: id, EventRate: 50, Removable: id >= 2} }
	cold := func(id uint16) ShardLoad { return ShardLoad{ID: id, EventRate: 1, Removable: id >= 2} }
	draining := func(l ShardLoad) ShardLoad { l.Draining = true; return l }
	longIdle := func(ids ...uint16) ScalingState {
		st := ScalingState{IdleSince: map[uint16]time.Time{}}
		for _, id := range ids {
			st.IdleSince[id] = t0.Add(-time.Hour)
		}
		return st
	}
	cases := []struct {
		name       string
		st         ScalingState
		loads      []ShardLoad
		want       Action
		shard      uint16
		overloaded int
	}{
		{name: "half overloaded is not more than half", loads: []ShardLoad{hot(0), warm(1)}, want: None, overloaded: 1},
		{name: "two of three overloaded scales up", loads: []ShardLoad{hot(0), hot(1), warm(2)}, want: ScaleUp, overloaded: 2},
		{name: "event rate alone scales up", loads: []ShardLoad{hot(0), hot(1)}, want: ScaleUp, overloaded: 2},
		{name: "draining shards are not evaluated", loads: []ShardLoad{hot(0), warm(1), draining(hot(2)), draining(hot(3))}, want: None, overloaded: 1},
		{name: "draining shards count against max", loads: []ShardLoad{hot(0), hot(1), hot(2), hot(3), hot(4), draining(cold(5))}, want: None, overloaded: 5},
		{name: "draining shards shrink the majority base", loads: []ShardLoad{hot(0), warm(1), hot(2), draining(cold(3))}, want: ScaleUp, overloaded: 2},
		{name: "a busy shard that drains fast is not idle", st: longIdle(2), loads: []ShardLoad{warm(0), warm(1), {ID: 2, EventRate: 20, Removable: true}}, want: None},
		{name: "a cold added shard drains", st: longIdle(2), loads: []ShardLoad{warm(0), warm(1), cold(2)}, want: ScaleDown, shard: 2},
		{name: "a draining shard is not drained again", st: longIdle(2, 3), loads: []ShardLoad{warm(0), warm(1), draining(cold(2)), cold(3)}, want: ScaleDown, shard: 3},
		{name: "min shards counts live shards only", st: longIdle(2), loads: []ShardLoad{warm(0), draining(cold(1)), cold(2)}, want: None},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, next := Decide(p, c.st, c.loads, t0)
			if d.Action != c.want || (c.want == ScaleDown && d.Shard != c.shard) {
				t.Fatalf("Decide = %+v, want %s shard %d", d, c.want, c.shard)
			}
			if d.Overloaded != c.overloaded && c.want != ScaleDown {
				t.Fatalf("Overloaded = %d, want %d", d.Overloaded, c.overloaded)
			}
			for _, l := range c.loads {
				if _, ok := next.IdleSince[l.ID]; ok && l.Draining {
					t.Fatalf("draining shard %d tracked as idle", l.ID)
				}
			}
		})
	}
}

// Cooldown and MaxShards across successive evaluations under a load that
// never lets up: one shard per cooldown, then nothing at the cap.
func TestScaleUpHonoursCooldownAndMax(t *testing.T) {
	p := testPolicy()
	p.MaxShards, p.OverloadedFraction, p.EventRateThreshold = 5, 0.5, 10
	loads := []ShardLoad{{ID: 0, EventRate: 50}, {ID: 1, EventRate: 50}}
	var (
		st     ScalingState
		ups    []time.Time
		now    = t0
		second = time.Second
	)
	for ; now.Before(t0.Add(2 * time.Minute)); now = now.Add(second) {
		var d Decision
		d, st = Decide(p, st, loads, now)
		if d.Action == ScaleUp {
			ups = append(ups, now)
			loads = append(loads, ShardLoad{ID: uint16(len(loads)), EventRate: 50, Removable: true})
		}
	}
	if len(loads) != p.MaxShards {
		t.Fatalf("ended with %d shards, want the cap %d", len(loads), p.MaxShards)
	}
	for i := 1; i < len(ups); i++ {
		if gap := ups[i].Sub(ups[i-1]); gap < p.Cooldown {
			t.Fatalf("scale-ups %s apart, cooldown is %s", gap, p.Cooldown)
		}
	}
}
