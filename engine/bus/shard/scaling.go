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
	// EventRateThreshold: a shard receiving at least this many events per
	// second on average is overloaded (Net's velocity signal).
	EventRateThreshold float64
	// UnderutilizedThreshold: a shard whose mean fill ratio stays below it
	// is idle. With EventRateThreshold set, an idle shard's event rate
	// must also stay below UnderutilizedThreshold × EventRateThreshold, so
	// a shard that is busy but drains fast is never taken for idle.
	UnderutilizedThreshold float64
	// OverloadedFraction is the share of evaluated shards that must be
	// overloaded for a scale-up: more than this fraction (0.5: more than
	// half). Zero means a single overloaded shard suffices (the bus's own
	// monitor).
	OverloadedFraction float64
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
	// EventRate is events per second.
	EventRate float64
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
		m.EventRate += s.EventRate
		push += s.PushLatency
		flush += s.FlushLatency
		m.At = s.At
	}
	n := len(w.samples)
	m.FillRatio /= float64(n)
	m.EventRate /= float64(n)
	m.PushLatency = push / time.Duration(n)
	m.FlushLatency = flush / time.Duration(n)
	return m
}

// ShardLoad is one shard's averaged metrics as Decide sees them.
type ShardLoad struct {
	ID           uint16
	FillRatio    float64
	PushLatency  time.Duration
	FlushLatency time.Duration
	EventRate    float64
	// Removable is false for shards the policy may never drain (the
	// cluster's base shards).
	Removable bool
	// Draining shards still exist (they count against MaxShards and
	// MinShards is counted without them) but take no new events: they
	// are neither overloaded nor candidates for another drain.
	Draining bool
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

// Decision is Decide's answer. Shard is set for ScaleDown. Overloaded
// is how many evaluated shards were overloaded, whatever the action.
type Decision struct {
	Action     Action
	Shard      uint16
	Reason     string
	Overloaded int
}

// ScalingState is what Decide carries from one evaluation to the next.
type ScalingState struct {
	LastScale time.Time
	// IdleSince records when each shard was first seen under the
	// underutilised threshold in its current idle stretch.
	IdleSince map[uint16]time.Time
}

// Decide evaluates p over the shards' loads at now. It is pure: the
// returned state is a new value and st is not modified.
//
// A shard is overloaded when any set threshold is reached. The policy
// scales up when more than OverloadedFraction of the non-draining shards
// are overloaded (any one with the zero fraction) and fewer than
// MaxShards shards exist, draining ones included. It drains the longest
// idle removable shard once it has been idle for ScaleDownDelay, never
// leaving fewer than MinShards non-draining shards. Either action waits
// out Cooldown since the previous one.
func Decide(p Policy, st ScalingState, loads []ShardLoad, now time.Time) (Decision, ScalingState) {
	next := ScalingState{LastScale: st.LastScale, IdleSince: make(map[uint16]time.Time, len(loads))}
	var (
		overloaded []string
		live       int
	)
	for _, l := range loads {
		if l.Draining {
			continue
		}
		live++
		if why := p.overload(l); why != "" {
			overloaded = append(overloaded, why)
		}
		if p.idle(l) {
			if since, ok := st.IdleSince[l.ID]; ok {
				next.IdleSince[l.ID] = since
			} else {
				next.IdleSince[l.ID] = now
			}
		}
	}
	d := Decision{Overloaded: len(overloaded)}

	if !st.LastScale.IsZero() && now.Sub(st.LastScale) < p.Cooldown {
		d.Reason = "cooldown"
		return d, next
	}

	if len(loads) < p.MaxShards && len(overloaded) > 0 && float64(len(overloaded)) > p.OverloadedFraction*float64(live) {
		next.LastScale = now
		d.Action = ScaleUp
		d.Reason = overloaded[0]
		if p.OverloadedFraction > 0 {
			d.Reason = fmt.Sprintf("%d of %d shards overloaded (%s)", len(overloaded), live, overloaded[0])
		}
		return d, next
	}

	if live > p.MinShards {
		var (
			pick  uint16
			since time.Time
			found bool
		)
		for _, l := range loads {
			s, idle := next.IdleSince[l.ID]
			if !idle || !l.Removable || l.Draining || now.Sub(s) < p.ScaleDownDelay {
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
			d.Action, d.Shard = ScaleDown, pick
			d.Reason = fmt.Sprintf("shard %d idle since %s (>= %s)", pick, since.Format(time.RFC3339Nano), p.ScaleDownDelay)
			return d, next
		}
	}
	return d, next
}

// overload says why l is overloaded under p ("" if it is not).
func (p Policy) overload(l ShardLoad) string {
	switch {
	case p.FillRatioThreshold > 0 && l.FillRatio >= p.FillRatioThreshold:
		return fmt.Sprintf("shard %d fill ratio %.2f >= %.2f", l.ID, l.FillRatio, p.FillRatioThreshold)
	case p.PushLatencyThreshold > 0 && l.PushLatency >= p.PushLatencyThreshold:
		return fmt.Sprintf("shard %d push latency %s >= %s", l.ID, l.PushLatency, p.PushLatencyThreshold)
	case p.FlushLatencyThreshold > 0 && l.FlushLatency >= p.FlushLatencyThreshold:
		return fmt.Sprintf("shard %d flush latency %s >= %s", l.ID, l.FlushLatency, p.FlushLatencyThreshold)
	case p.EventRateThreshold > 0 && l.EventRate >= p.EventRateThreshold:
		return fmt.Sprintf("shard %d event rate %.1f/s >= %.1f/s", l.ID, l.EventRate, p.EventRateThreshold)
	}
	return ""
}

// idle says l is under the underutilised threshold on every signal that
// has a scale: its fill ratio, and its event rate when the policy has an
// event-rate threshold.
func (p Policy) idle(l ShardLoad) bool {
	if l.FillRatio >= p.UnderutilizedThreshold {
		return false
	}
	return p.EventRateThreshold <= 0 || l.EventRate < p.UnderutilizedThreshold*p.EventRateThreshold
}

// clone is used by tests to check Decide leaves its input alone.
func (s ScalingState) clone() ScalingState {
	return ScalingState{LastScale: s.LastScale, IdleSince: maps.Clone(s.IdleSince)}
}
