package bus

import (
	"context"
	"time"

	"github.com/purplerain/mesh-operator/engine/bus/shard"
)

// monitor refreshes the least-loaded routing set every RouteRefresh and,
// when a scaling policy is configured, samples shard metrics and applies
// the policy every MonitorInterval.
func (b *Bus) monitor() {
	defer b.monitorWG.Done()
	route := time.NewTicker(b.cfg.RouteRefresh)
	defer route.Stop()
	var scale <-chan time.Time
	if b.cfg.Scaling != nil {
		t := time.NewTicker(b.cfg.MonitorInterval)
		defer t.Stop()
		scale = t.C
	}
	for {
		select {
		case <-b.stopMon:
			return
		case <-route.C:
			b.mgr.Refresh()
		case <-scale:
			b.EvaluateScaling(context.Background())
		}
	}
}

// EvaluateScaling samples every active shard, runs the scaling policy once
// and applies its decision, returning it. The monitor calls it every
// MonitorInterval; tests and operators may call it directly.
func (b *Bus) EvaluateScaling(ctx context.Context) (shard.Decision, error) {
	if b.cfg.Scaling == nil {
		return shard.Decision{}, nil
	}
	p := *b.cfg.Scaling
	now := b.cfg.Now()
	b.mu.Lock()
	loads := make([]shard.ShardLoad, 0, len(b.workers))
	for _, s := range b.mgr.ActiveShards() {
		w := b.workers[s.ID]
		if w == nil {
			continue
		}
		win := b.windows[s.ID]
		if win == nil {
			win = &shard.Window{}
			b.windows[s.ID] = win
		}
		win.Add(shard.Sample{
			At:           now,
			FillRatio:    float64(s.Load()) / float64(s.Ring.Cap()),
			PushLatency:  time.Duration(w.pushLat.Load()),
			FlushLatency: time.Duration(w.flushLat.Load()),
		}, p.MetricsWindow, p.MaxSamples)
		m := win.Mean()
		loads = append(loads, shard.ShardLoad{
			ID: s.ID, FillRatio: m.FillRatio, PushLatency: m.PushLatency, FlushLatency: m.FlushLatency,
			Removable: int(s.ID) >= b.cfg.BaseShards,
		})
	}
	d, next := shard.Decide(p, b.scaleState, loads, now)
	b.scaleState = next
	b.mu.Unlock()

	switch d.Action {
	case shard.ScaleUp:
		id, err := b.ScaleUp()
		if err != nil {
			return d, err
		}
		b.cfg.Logger.Info("bus: scaled up", "shard", id, "reason", d.Reason)
	case shard.ScaleDown:
		if err := b.ScaleDown(ctx, d.Shard); err != nil {
			return d, err
		}
		b.mu.Lock()
		delete(b.windows, d.Shard)
		b.mu.Unlock()
		b.cfg.Logger.Info("bus: scaled down", "shard", d.Shard, "reason", d.Reason)
	}
	return d, nil
}
