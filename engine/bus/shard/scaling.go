package shard

import (
	"fmt"
	"maps"
	"time"
)

// Policy is the autoscaling policy (Net's ScalingPolicy). Zero thresholds
// disable the signal they control.
type Policy struct {
	MinShards int
	MaxShards int
	// FillRatioThreshold: scale up when a shard's mean ring fill ratio
	// (0..1) over the window reaches it.
	FillRatioThreshold float64
	// PushLatencyThreshold: scale up when events wait this long in a ring
	// on average before the drain worker takes them.
	PushLatencyThreshold time.Duration
	// FlushLatencyThreshold: scale up when a batch takes this long on
	// average to dispatch to the adapter.
	FlushLatencyThreshold time.Duration
	// UnderutilizedThreshold: a shard whose mean fill ratio stays below it
	// is idle.
	UnderutilizedThreshold float64
	// Cooldown is the minimum time between two scaling actions.
	Cooldown time.Duration
	// ScaleDownDelay is how long a shard must stay idle before it is
	// drained.
	ScaleDownDelay time.Duration
	// MetricsWindow is how far back samples are averaged.
	MetricsWindow time.Duration
	// MaxSamples caps the samples a window keeps regardless of age, so a
	// burst of samples cannot grow it without bound.
	MaxSamples int
}

// DefaultPolicy is a conservative policy for n base shards.
func DefaultPolicy(base, max int) Policy {
	return Policy{
		MinShards:              base,
		MaxShards:              max,
		FillRatioThreshold:     0.8,
		PushLatencyThreshold:   50 * time.Millisecond,
		FlushLatencyThreshold:  250 * time.Millisecond,
		UnderutilizedThreshold: 0.05,
		Cooldown:               30 * time.Second,
		ScaleDownDelay:         5 * time.Minute,
		MetricsWindow:          10 * time.Second,
		MaxSamples:             1024,
	}
}

// Sample is one observation of one shard.
type Sample struct {
	At           time.Time
	FillRatio    float64
	PushLatency  time.Duration
	FlushLatency time.Duration
}

// Window keeps a shard's recent samples, bounded by both age and count.
type Window struct {
	samples []Sample
}

// DefaultMaxSamples caps a window whose policy sets no MaxSamples.
const DefaultMaxSamples = 1024

// Add records s and prunes samples older than span before s.At and any
// beyond the newest max (DefaultMaxSamples when max <= 0, so a window is
// always count-bounded).
func (w *Window) Add(s Sample, span time.Duration, max int) {
	if max <= 0 {
		max = DefaultMaxSamples
	}
	w.samples = append(w.samples, s)
	cut := 0
	if span > 0 {
		for cut < len(w.samples) && w.samples[cut].At.Before(s.At.Add(-span)) {
			cut++
		}
	}
	if len(w.samples)-cut > max {
		cut = len(w.samples) - max
	}
	if cut > 0 {
		w.samples = append(w.samples[:0], w.samples[cut:]...)
	}
}

// Len is the number of samples kept.
func (w *Window) Len() int { return len(w.samples) }

// Mean averages the kept samples (zero Sample if none).
func (w *Window) Mean() Sample {
	if len(w.samples) == 0 {
		return Sample{}
	}
	var m Sample
	var push, flush time.Duration
	for _, s := range w.samples {
		m.FillRatio += s.FillRatio
		push += s.PushLatency
		flush += s.FlushLatency
		m.At = s.At
	}
	n := len(w.samples)
	m.FillRatio /= float64(n)
	m.PushLatency = push / time.Duration(n)
	m.FlushLatency = flush / time.Duration(n)
	return m
}

// ShardLoad is one active shard's averaged metrics as Decide sees them.
type ShardLoad struct {
	ID           uint16
	FillRatio    float64
	PushLatency  time.Duration
	FlushLatency time.Duration
	// Removable is false for shards the policy may never drain (the
	// cluster's base shards).
	Removable bool
}

// Action is what Decide asks for.
type Action int

const (
	None Action = iota
	ScaleUp
	ScaleDown
)

func (a Action) String() string {
	switch a {
	case ScaleUp:
		return "ScaleUp"
	case ScaleDown:
		return "ScaleDown"
	}
	return "None"
}

// Decision is Decide's answer. Shard is set for ScaleDown.
type Decision struct {
	Action Action
	Shard  uint16
	Reason string
}

// ScalingState is what Decide carries from one evaluation to the next.
type ScalingState struct {
	LastScale time.Time
	// IdleSince records when each shard was first seen under the
	// underutilised threshold in its current idle stretch.
	IdleSince map[uint16]time.Time
}

// Decide evaluates p over the active shards' loads at now. It is pure: the
// returned state is a new value and st is not modified.
func Decide(p Policy, st ScalingState, loads []ShardLoad, now time.Time) (Decision, ScalingState) {
	next := ScalingState{LastScale: st.LastScale, IdleSince: make(map[uint16]time.Time, len(loads))}
	for _, l := range loads {
		if l.FillRatio < p.UnderutilizedThreshold {
			if since, ok := st.IdleSince[l.ID]; ok {
				next.IdleSince[l.ID] = since
			} else {
				next.IdleSince[l.ID] = now
			}
		}
	}

	if !st.LastScale.IsZero() && now.Sub(st.LastScale) < p.Cooldown {
		return Decision{Reason: "cooldown"}, next
	}

	if len(loads) < p.MaxShards {
		for _, l := range loads {
			var why string
			switch {
			case p.FillRatioThreshold > 0 && l.FillRatio >= p.FillRatioThreshold:
				why = fmt.Sprintf("shard %d fill ratio %.2f >= %.2f", l.ID, l.FillRatio, p.FillRatioThreshold)
			case p.PushLatencyThreshold > 0 && l.PushLatency >= p.PushLatencyThreshold:
				why = fmt.Sprintf("shard %d push latency %s >= %s", l.ID, l.PushLatency, p.PushLatencyThreshold)
			case p.FlushLatencyThreshold > 0 && l.FlushLatency >= p.FlushLatencyThreshold:
				why = fmt.Sprintf("shard %d flush latency %s >= %s", l.ID, l.FlushLatency, p.FlushLatencyThreshold)
			default:
				continue
			}
			next.LastScale = now
			return Decision{Action: ScaleUp, Reason: why}, next
		}
	}

	if len(loads) > p.MinShards {
		var (
			pick  uint16
			since time.Time
			found bool
		)
		for _, l := range loads {
			s, idle := next.IdleSince[l.ID]
			if !idle || !l.Removable || now.Sub(s) < p.ScaleDownDelay {
				continue
			}
			// Longest idle first; among equals the highest id, so the
			// most recently added shards go first.
			if !found || s.Before(since) || (s.Equal(since) && l.ID > pick) {
				pick, since, found = l.ID, s, true
			}
		}
		if found {
			next.LastScale = now
			delete(next.IdleSince, pick)
			return Decision{Action: ScaleDown, Shard: pick,
				Reason: fmt.Sprintf("shard %d idle since %s (>= %s)", pick, since.Format(time.RFC3339Nano), p.ScaleDownDelay)}, next
		}
	}
	return Decision{}, next
}

// clone is used by tests to check Decide leaves its input alone.
func (s ScalingState) clone() ScalingState {
	return ScalingState{LastScale: s.LastScale, IdleSince: maps.Clone(s.IdleSince)}
}
