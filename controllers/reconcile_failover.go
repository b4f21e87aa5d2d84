package controllers

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/status"
	"github.com/purplerain/mesh-operator/node/orchestrate"
	"github.com/purplerain/mesh-operator/node/topology"
)

// planFailover finds an active member that owns shards and has been not
// ready (pod not Ready, or no topology push to it answered) for
// standby.failoverAfter, and returns the promotion of its followers. It
// also returns when to look again while a member is waiting out
// failoverAfter.
//
// Failover is only considered once the cluster ran (a cluster being
// created has owners that are not ready yet).
func (r *MeshClusterReconciler) planFailover(mc *meshv1.MeshCluster, t *topology.Topology, obs *status.Observation) (*operation, time.Duration) {
	if !status.Started(mc) {
		return nil, 0
	}
	nn := client.ObjectKeyFromObject(mc)
	after := mc.Spec.Standby.FailoverAfter.Duration
	now := time.Now()
	var (
		failed  string
		requeue time.Duration
	)
	r.memory.with(nn, func(cm *clusterMemory) {
		for _, m := range t.Members {
			if m.Role != topology.Active || len(t.OwnedBy(m.Name)) == 0 {
				delete(cm.notReadySince, m.Name)
				continue
			}
			unreachable := r.Leases != nil && r.Leases.Unreachable(nn, m.Name, after)
			restarted := r.Leases != nil && r.Leases.Restarted(nn, m.Name)
			if obs.PodReady[m.Name] && !unreachable && !restarted {
				delete(cm.notReadySince, m.Name)
				continue
			}
			since, ok := cm.notReadySince[m.Name]
			if !ok {
				since = now
				cm.notReadySince[m.Name] = now
			}
			if restarted {
				// Its log is gone: waiting failoverAfter gains nothing.
				since = now.Add(-after)
			}
			if wait := after - now.Sub(since); wait > 0 {
				// Look again at least every second: the keeper may find
				// the member restarted (no event would wake us).
				requeue = requeueMin(requeue, min(wait, time.Second))
				continue
			}
			if failed == "" {
				failed = m.Name
			}
		}
	})
	if failed == "" {
		if op := r.planLiveFollowers(mc, t, obs); op != nil {
			return op, 0
		}
		return nil, requeue
	}
	msg := fmt.Sprintf("promoting the followers of %s's shards %v (not ready for %s)", failed, t.OwnedBy(failed), after)
	obs.Operation = &status.Operation{Reason: status.ReasonFailingOver, Message: msg}
	return &operation{reason: status.ReasonFailingOver, message: msg, run: func(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error {
		return r.failover(ctx, mc, d, t, failed, obs.PodReady)
	}}, 0
}

// failover promotes the followers of failed's shards. The Driver waits out
// failed's lease from the last push to it that any part of the operator
// saw answered (unknown after an operator restart: then a whole lease
// from now), so failed has stopped accepting writes before anyone else
// owns its shards. In the new topology failed is a standby; the keeper
// pushes only that epoch from then on, so a restarted failed node comes
// back as a follower.
//
// The promoted shards' only follower is then failed itself (a standby
// that took them over stops being one), so under ackPolicy Standby they
// could not acknowledge a write until failed is back: a ready active that
// does not own the shard follows it too, at one more epoch.
func (r *MeshClusterReconciler) failover(ctx context.Context, mc *meshv1.MeshCluster, d *orchestrate.Driver, t *topology.Topology, failed string, ready map[string]bool) error {
	nn := client.ObjectKeyFromObject(mc)
	lastPush := time.Now()
	if r.Leases != nil {
		// No renewal from here on; then the lease runs from the last push
		// that may have reached failed.
		r.Leases.Suspend(nn, failed)
		if at := r.Leases.LeaseFrom(nn, failed); !at.IsZero() {
			lastPush = at
		}
	}
	start := time.Now()
	r.Recorder.Eventf(mc, nil, corev1.EventTypeWarning, "FailingOver", "Failover", "%s owns shards %v and is not ready: waiting out its lease, then promoting their followers", failed, t.OwnedBy(failed))
	next, err := d.Promote(ctx, t, failed, lastPush)
	if err != nil {
		if next == t && r.Leases != nil {
			// Nothing recorded: failed keeps its shards, and its lease.
			r.Leases.Resume(nn, failed)
		}
		return fmt.Errorf("promote the followers of %s: %w", failed, err)
	}
	var promoted []string
	for _, id := range t.OwnedBy(failed) {
		s, _ := next.Shard(id)
		promoted = append(promoted, fmt.Sprintf("%d→%s", id, s.Owner))
	}
	r.observeFailover(mc, failed)
	r.memory.with(nn, func(cm *clusterMemory) { delete(cm.notReadySince, failed) })
	if withFollowers := addLiveFollowers(next, t.OwnedBy(failed), failed, ready); withFollowers != nil {
		if err := recordAndPush(ctx, d, withFollowers); err != nil {
			return fmt.Errorf("give the promoted shards a live follower: %w", err)
		}
		next = withFollowers
	}
	log.FromContext(ctx).Info("failed over", "failed", failed, "epoch", next.Epoch, "shards", promoted, "took", time.Since(start).Round(time.Millisecond).String())
	r.Recorder.Eventf(mc, nil, corev1.EventTypeNormal, "Promoted", "Failover", "epoch %d: shards of %s promoted (%v) in %s; %s rejoins as a standby", next.Epoch, failed, promoted, time.Since(start).Round(time.Millisecond), failed)
	return nil
}

// addLiveFollowers returns t at epoch+1 in which each of shards that has
// no ready follower besides failed gets the least loaded ready active that
// does not own it as a follower, or nil when none needs one.
func addLiveFollowers(t *topology.Topology, shards []uint16, failed string, ready map[string]bool) *topology.Topology {
	next := t.Clone()
	next.Epoch++
	changed := false
	follows := map[string]int{}
	for _, s := range next.Shards {
		for _, f := range s.Followers {
			follows[f]++
		}
	}
	for i := range next.Shards {
		s := &next.Shards[i]
		if !slices.Contains(shards, s.ID) || slices.ContainsFunc(s.Followers, func(f string) bool { return f != failed && ready[f] }) {
			continue
		}
		best := ""
		for _, m := range next.Members {
			if m.Role != topology.Active || m.Name == s.Owner || m.Name == failed || !ready[m.Name] || slices.Contains(s.Followers, m.Name) {
				continue
			}
			if best == "" || follows[m.Name] < follows[best] {
				best = m.Name
			}
		}
		if best != "" {
			s.Followers = append(s.Followers, best)
			follows[best]++
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return next
}

// planLiveFollowers returns the step that gives every shard without a
// ready follower a ready active follower under ackPolicy Standby (its
// owner cannot acknowledge a write without one), or nil. The failover step
// does this itself right after a promotion; this is the same step planned
// from the record, so an operator that restarted between the promotion
// and it still takes it. The followers added are dropped again once the
// shard's standbys caught up (planTidy).
func (r *MeshClusterReconciler) planLiveFollowers(mc *meshv1.MeshCluster, t *topology.Topology, obs *status.Observation) *operation {
	if mc.Spec.Standby.AckPolicy != meshv1.AckStandby {
		return nil
	}
	var shards []uint16
	for _, s := range t.Shards {
		if obs.PodReady[s.Owner] && !slices.ContainsFunc(s.Followers, func(f string) bool { return obs.PodReady[f] }) {
			shards = append(shards, s.ID)
		}
	}
	if len(shards) == 0 || addLiveFollowers(t, shards, "", obs.PodReady) == nil {
		return nil
	}
	msg := fmt.Sprintf("shards %v have no ready follower: a ready active follows them until their standbys are back (ackPolicy Standby)", shards)
	obs.Operation = &status.Operation{Reason: "AddingFollowers", Message: msg}
	return liveFollowersStep(shards, "", obs.PodReady, msg)
}

// liveFollowersStep is the step that records, then pushes, t with a ready
// active follower added to those of shards that have no ready follower
// but except (addLiveFollowers, planned again from the recorded topology
// the step runs on). The rolling update takes it too, before it deletes
// a pod that is some shard's only ready follower.
func liveFollowersStep(shards []uint16, except string, ready map[string]bool, msg string) *operation {
	return &operation{reason: "AddingFollowers", message: msg, run: func(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error {
		next := addLiveFollowers(t, shards, except, ready)
		if next == nil {
			return nil
		}
		return recordAndPush(ctx, d, next)
	}}
}
