package controllers

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/status"
	"github.com/purplerain/mesh-operator/engine/bus/shard"
	"github.com/purplerain/mesh-operator/node"
	"github.com/purplerain/mesh-operator/node/adminclient"
	"github.com/purplerain/mesh-operator/node/orchestrate"
	"github.com/purplerain/mesh-operator/node/topology"
)

// Shard autoscaling (spec.shards.autoscale, the Net scaling policy). When
// nothing else is to be done, a pass reads every active node's status
// (at most once per autoscaleEvalInterval), averages each shard's reported
// load (fill ratio, push and flush latency, event rate) over
// metricsWindow, and runs the pure policy shard.Decide on it:
//
//   - more than half of the shards that take new events are overloaded
//     (any threshold reached): a shard is added, with the next unused id
//     (never reused, status.autoscale.nextShardID), owned by the least
//     loaded active and followed by every standby; keys never hash onto
//     it, keyless events spread onto it;
//   - an added shard idle (under underutilizedThresholdPercent) for
//     scaleDownDelay is marked draining: nodes and clients stop routing
//     keyless events to it and it stays readable;
//   - both wait cooldown after the previous one (status.autoscale.lastChange)
//     and never go past maxShards (draining shards count) or drain a base
//     shard;
//   - a draining shard whose owner reports an empty log (retention
//     removed everything) leaves the topology.
//
// Each change is one topology epoch, announced in Progressing, recorded in
// status before it is pushed and told in an Event with its reason.
// status.autoscale.overloaded and shards[].idleSince follow each
// evaluation; both, and the policy's carried state, live in status, so a
// restarted operator resumes (only the metric windows start empty: it
// waits a full metricsWindow before adding a shard again).
// Turning autoscale off freezes the shard set, except that draining
// shards are still removed once empty.
//
// The cooldown check and the change it allows cannot interleave with
// another decision (Net's mapper serialises them under a lock): a
// cluster is reconciled by one pass at a time, and lastChange is written
// with the step's announcement under optimistic locking, so an operator
// working from a stale record fails its write instead of acting twice.

const (
	// autoscaleEvalInterval is how often the policy is evaluated (the
	// nodes report load over their last second).
	autoscaleEvalInterval = time.Second
	// autoscaleStatusTimeout bounds each node's status answer.
	autoscaleStatusTimeout = 2 * time.Second
	// autoscaleOverloadedFraction: more than half the shards must be
	// overloaded before one is added.
	autoscaleOverloadedFraction = 0.5
)

// autoscaleMemory is what the autoscaler keeps between passes: the metric
// windows (lost on restart, which only delays a scale-up by one
// metricsWindow).
type autoscaleMemory struct {
	since    time.Time
	lastEval time.Time
	windows  map[uint16]*shard.Window
}

// autoscalePolicy maps the spec onto the engine's policy.
func autoscalePolicy(mc *meshv1.MeshCluster) shard.Policy {
	a := mc.Spec.Shards.Autoscale
	under := int32(10)
	if a.UnderutilizedThresholdPercent != nil {
		under = *a.UnderutilizedThresholdPercent
	}
	maxShards := int(a.MaxShards)
	if maxShards <= 0 {
		maxShards = int(mc.Spec.Shards.Count)
	}
	return shard.Policy{
		MinShards:              int(mc.Spec.Shards.Count),
		MaxShards:              min(maxShards, 1<<16),
		FillRatioThreshold:     float64(a.FillRatioThresholdPercent) / 100,
		PushLatencyThreshold:   a.PushLatencyThreshold.Duration,
		FlushLatencyThreshold:  a.FlushLatencyThreshold.Duration,
		EventRateThreshold:     float64(a.EventRateThreshold),
		UnderutilizedThreshold: float64(under) / 100,
		OverloadedFraction:     autoscaleOverloadedFraction,
		Cooldown:               a.Cooldown.Duration,
		ScaleDownDelay:         a.ScaleDownDelay.Duration,
		MetricsWindow:          a.MetricsWindow.Duration,
	}
}

// shardReport is what the owner of one shard said about it: whether its
// log is empty, whether it has stopped taking events for it (draining,
// released from its node bus), and its load.
type shardReport struct {
	empty    bool
	draining bool
	load     *node.ShardLoad
}

// readShardReports asks every active member for its status and returns
// each owned shard's report, or an error naming a member that did not
// answer (the pass then decides nothing: a missing report would look
// like an idle shard).
func readShardReports(ctx context.Context, dial adminclient.Dialer, t *topology.Topology) (map[uint16]shardReport, error) {
	type answer struct {
		name string
		st   []node.ShardStatus
		err  error
	}
	var (
		wg      sync.WaitGroup
		answers = make(chan answer, len(t.Members))
	)
	for _, m := range t.Members {
		if m.Role != topology.Active {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, autoscaleStatusTimeout)
			defer cancel()
			st, err := dial(m.Admin).Status(cctx)
			answers <- answer{name: m.Name, st: st.Shards, err: err}
		}()
	}
	wg.Wait()
	close(answers)
	out := map[uint16]shardReport{}
	for a := range answers {
		if a.err != nil {
			return nil, fmt.Errorf("status of %s: %w", a.name, a.err)
		}
		for _, s := range a.st {
			if s.Role != "owner" {
				continue
			}
			if sh, ok := t.Shard(s.ID); ok && sh.Owner == a.name {
				out[s.ID] = shardReport{empty: s.First == s.Next, draining: s.Draining, load: s.Load}
			}
		}
	}
	return out, nil
}

// drainedEmpty picks a draining shard that can leave t: its owner reports
// it draining too (the owner applied the draining epoch and released the
// shard from its node bus, so it appends nothing more to it) and its log
// empty (retention removed everything). Trusting the operator's record
// alone would remove a shard whose owner missed the draining push and
// still appends keyless events to it: acknowledged events gone with it.
func drainedEmpty(t *topology.Topology, reports map[uint16]shardReport) (uint16, bool) {
	for _, s := range t.Shards {
		rep, ok := reports[s.ID]
		if s.Draining && !s.Fenced && ok && rep.draining && rep.empty {
			return s.ID, true
		}
	}
	return 0, false
}

// planAutoscale returns this pass's autoscaling step (nil: none) and when
// to evaluate again (0: autoscaling is off and nothing drains).
func (r *MeshClusterReconciler) planAutoscale(ctx context.Context, mc *meshv1.MeshCluster, t *topology.Topology, obs *status.Observation) (*operation, time.Duration) {
	a := mc.Spec.Shards.Autoscale
	enabled := a != nil && a.Enabled
	draining := slices.ContainsFunc(t.Shards, func(s topology.Shard) bool { return s.Draining })
	if !enabled && !draining {
		return nil, 0
	}
	for _, m := range t.Members {
		if m.Role == topology.Active && !obs.PodReady[m.Name] {
			return nil, autoscaleEvalInterval // decide on complete reports only
		}
	}
	now := time.Now()
	nn := client.ObjectKeyFromObject(mc)
	var (
		wait    time.Duration
		retryAt time.Time
		mem     *autoscaleMemory
	)
	r.memory.with(nn, func(cm *clusterMemory) {
		if cm.autoscale == nil {
			cm.autoscale = &autoscaleMemory{since: now, windows: map[uint16]*shard.Window{}}
		}
		mem, retryAt = cm.autoscale, cm.retryAt
		if next := mem.lastEval.Add(autoscaleEvalInterval); now.Before(next) {
			wait = next.Sub(now)
		} else if now.Before(retryAt) {
			wait = retryAt.Sub(now)
		} else {
			mem.lastEval = now
		}
	})
	if wait > 0 {
		return nil, wait
	}
	logger := log.FromContext(ctx)
	reports, err := readShardReports(ctx, adminclient.NewHTTPDialer(obs.OperatorKey, nil), t)
	if err != nil {
		logger.V(1).Info("autoscaling: not evaluated", "err", err.Error())
		return nil, autoscaleEvalInterval
	}

	// A draining shard retention emptied leaves the topology; the shard
	// set shrinks whatever the cooldown (nothing is routed to it).
	if id, ok := drainedEmpty(t, reports); ok {
		msg := fmt.Sprintf("removing drained shard %d: retention emptied it (%d shards left)", id, len(t.Shards)-1)
		obs.Operation = &status.Operation{Reason: "Autoscaling", Message: msg}
		return &operation{reason: "Autoscaling", message: msg, run: func(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error {
			next, err := topology.WithoutShard(t, id)
			if err != nil {
				return err
			}
			if err := recordAndPush(ctx, d, next); err != nil {
				return err
			}
			r.Recorder.Eventf(mc, nil, corev1.EventTypeNormal, "ShardRemoved", "Autoscale", "epoch %d: shard %d removed, %d shards: it drained and retention emptied it", next.Epoch, id, len(next.Shards))
			return nil
		}}, 0
	}
	if !enabled {
		return nil, autoscaleEvalInterval
	}

	p := autoscalePolicy(mc)
	var (
		loads   []shard.ShardLoad
		byOwner = map[string]float64{}
	)
	for id := range mem.windows {
		if _, ok := t.Shard(id); !ok {
			delete(mem.windows, id)
		}
	}
	for _, s := range t.Shards {
		l := shard.ShardLoad{ID: s.ID, Removable: int(s.ID) >= t.BaseShards, Draining: s.Draining}
		if rep := reports[s.ID]; rep.load != nil && !s.Draining {
			w := mem.windows[s.ID]
			if w == nil {
				w = &shard.Window{}
				mem.windows[s.ID] = w
			}
			w.Add(shard.Sample{
				At: now, FillRatio: rep.load.FillRatio, EventRate: rep.load.EventRate,
				PushLatency:  time.Duration(rep.load.PushLatencyMicros) * time.Microsecond,
				FlushLatency: time.Duration(rep.load.FlushLatencyMicros) * time.Microsecond,
			}, p.MetricsWindow, 0)
		}
		if w := mem.windows[s.ID]; w != nil && !s.Draining {
			m := w.Mean()
			l.FillRatio, l.PushLatency, l.FlushLatency, l.EventRate = m.FillRatio, m.PushLatency, m.FlushLatency, m.EventRate
			byOwner[s.Owner] += m.EventRate
		}
		loads = append(loads, l)
	}

	rec := meshv1.AutoscaleStatus{}
	if mc.Status.Autoscale != nil {
		rec = *mc.Status.Autoscale.DeepCopy()
	}
	st := shard.ScalingState{IdleSince: map[uint16]time.Time{}}
	if rec.LastChange != nil {
		st.LastScale = rec.LastChange.Time
	}
	for _, s := range mc.Status.Shards {
		if s.IdleSince != nil && int(s.ID) >= t.BaseShards {
			st.IdleSince[uint16(s.ID)] = s.IdleSince.Time
		}
	}
	d, next := shard.Decide(p, st, loads, now)
	if d.Action == shard.ScaleUp && now.Sub(mem.since) < p.MetricsWindow {
		// The windows started empty (operator start): a scale-up waits for
		// a whole window of reports.
		d.Action = shard.None
	}
	obs.IdleSince = map[uint16]metav1.Time{}
	for id, since := range next.IdleSince {
		if int(id) >= t.BaseShards {
			obs.IdleSince[id] = ceilSecond(since)
		}
	}
	rec.Overloaded = int32(d.Overloaded)
	if base := int32(t.BaseShards); rec.NextShardID < base {
		rec.NextShardID = base
	}
	for _, s := range t.Shards {
		rec.NextShardID = max(rec.NextShardID, int32(s.ID)+1)
	}
	obs.Autoscale = &rec

	var op *operation
	switch {
	case d.Action == shard.ScaleUp && rec.NextShardID >= 1<<16:
		logger.Info("autoscaling: overloaded but no shard id is left", "next", rec.NextShardID)
	case d.Action == shard.ScaleUp:
		op = r.addShardOperation(mc, t, uint16(rec.NextShardID), byOwner, d.Reason, &rec)
	case d.Action == shard.ScaleDown:
		op = r.drainShardOperation(mc, d.Shard, d.Reason)
	}
	if op == nil {
		return nil, autoscaleEvalInterval
	}
	if d.Action == shard.ScaleDown {
		delete(obs.IdleSince, d.Shard)
	}
	last := ceilSecond(now)
	rec.LastChange = &last
	rec.Reason = op.message
	obs.Operation = &status.Operation{Reason: "Autoscaling", Message: op.message}
	logger.Info("autoscaling", "step", op.message, "overloaded", d.Overloaded, "shards", len(t.Shards))
	return op, 0
}

// addShardOperation adds shard id on the least loaded active.
func (r *MeshClusterReconciler) addShardOperation(mc *meshv1.MeshCluster, t *topology.Topology, id uint16, load map[string]float64, why string, rec *meshv1.AutoscaleStatus) *operation {
	owner := topology.LeastLoadedActive(t, load)
	msg := fmt.Sprintf("adding shard %d on %s (%d shards): %s", id, owner, len(t.Shards)+1, why)
	rec.NextShardID = int32(id) + 1
	return &operation{reason: "Autoscaling", message: msg, run: func(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error {
		next, err := topology.AddShard(t, id, load)
		if err != nil {
			return err
		}
		if err := recordAndPush(ctx, d, next); err != nil {
			return err
		}
		s, _ := next.Shard(id)
		r.Recorder.Eventf(mc, nil, corev1.EventTypeNormal, "ShardAdded", "Autoscale", "epoch %d: shard %d added on %s, %d shards: %s", next.Epoch, id, s.Owner, len(next.Shards), why)
		return nil
	}}
}

// drainShardOperation marks added shard id draining.
func (r *MeshClusterReconciler) drainShardOperation(mc *meshv1.MeshCluster, id uint16, why string) *operation {
	msg := fmt.Sprintf("draining shard %d: %s", id, why)
	return &operation{reason: "Autoscaling", message: msg, run: func(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error {
		next, err := topology.WithDraining(t, id)
		if err != nil {
			return err
		}
		if err := recordAndPush(ctx, d, next); err != nil {
			return err
		}
		r.Recorder.Eventf(mc, nil, corev1.EventTypeNormal, "ShardDraining", "Autoscale", "epoch %d: shard %d drains (no new events; readable until retention empties it): %s", next.Epoch, id, why)
		return nil
	}}
}

// ceilSecond is t rounded up to the second. Status keeps times to the
// second; rounding up means the cooldown and scaleDownDelay that count
// from a recorded time are never shorter than configured, and a pass
// that changes nothing computes the same status and writes nothing.
func ceilSecond(t time.Time) metav1.Time {
	c := t.Truncate(time.Second)
	if c.Before(t) {
		c = c.Add(time.Second)
	}
	return metav1.NewTime(c)
}
