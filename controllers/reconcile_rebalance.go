package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/status"
	"github.com/purplerain/mesh-operator/node/orchestrate"
	"github.com/purplerain/mesh-operator/node/topology"
)

// planRebalance returns the next shard move towards max skew 1 between
// the actives (after a scale-up the new actives own nothing), or nil when
// the cluster is balanced or an active is not ready.
//
// One move per pass, so migration.maxConcurrent is honoured for any value;
// TODO(issue 8): run up to maxConcurrent handoffs of distinct shards at
// once (the Driver records each step of one handoff; concurrent handoffs
// need their records merged into one topology).
func (r *MeshClusterReconciler) planRebalance(mc *meshv1.MeshCluster, t *topology.Topology, ready map[string]bool) *operation {
	for _, m := range t.Members {
		if m.Role == topology.Active && !ready[m.Name] {
			// Wait for every active: a move to or from a node that is
			// not ready would only fail (and a failover may be due).
			return nil
		}
	}
	moves := topology.Balance(t, nil, 1)
	if len(moves) == 0 {
		return nil
	}
	return r.moveOperation(mc, "Rebalancing", moves[0], false, len(topology.Balance(t, nil, 0)))
}

// moveOperation is one fenced handoff, announced in Progressing and by an
// Event before and after.
func (r *MeshClusterReconciler) moveOperation(mc *meshv1.MeshCluster, reason string, move topology.Move, scaleDown bool, remaining int) *operation {
	msg := fmt.Sprintf("moving shard %d from %s to %s (%d moves left)", move.Shard, move.From, move.To, remaining)
	return &operation{reason: reason, message: msg, scaleDown: scaleDown, move: &move, run: func(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error {
		r.observeMoveStarted(mc, move)
		err := handoff(ctx, d, t, move, func(reason, format string, args ...any) {
			r.Recorder.Eventf(mc, nil, corev1.EventTypeNormal, reason, "Move", format, args...)
		})
		r.observeMoveDone(mc, move, err == nil)
		return err
	}}
}

// handoff checks both ends answer (a dead end would only time out), then
// runs the Driver's fenced handoff.
func handoff(ctx context.Context, d *orchestrate.Driver, t *topology.Topology, move topology.Move, events func(string, string, ...any)) error {
	for _, name := range []string{move.From, move.To} {
		m, ok := t.Member(name)
		if !ok {
			return fmt.Errorf("%s is not a member at epoch %d", name, t.Epoch)
		}
		cctx, cancel := context.WithTimeout(ctx, reachabilityTimeout)
		_, err := d.Dial(m.Admin).Status(cctx)
		cancel()
		if err != nil {
			return fmt.Errorf("node %s is unreachable: %w", name, err)
		}
	}
	events("ShardMoving", "shard %d: %s → %s (epoch %d)", move.Shard, move.From, move.To, t.Epoch)
	next, err := d.Handoff(ctx, t, move)
	if err != nil {
		return fmt.Errorf("handoff of shard %d from %s to %s: %w", move.Shard, move.From, move.To, err)
	}
	events("ShardMoved", "shard %d now owned by %s (epoch %d)", move.Shard, move.To, next.Epoch)
	return nil
}

// reachabilityTimeout bounds the check that both ends of a move answer.
const reachabilityTimeout = 2 * time.Second

// migration is the status record of a move in flight.
func migration(m topology.Move) meshv1.MigrationStatus {
	return meshv1.MigrationStatus{Shard: int32(m.Shard), From: m.From, To: m.To, Phase: "Handoff"}
}

// planResume finishes what a previous pass (or a previous operator) left
// in the record. A fenced shard refuses writes, so it comes first: the
// move recorded in status.migrations is resumed (the Driver continues
// from the fence: catch-up, then cutover, or aborts leaving the old owner
// unfenced); a fenced shard without a recorded move is unfenced at a new
// epoch. A recorded move whose shard is not fenced is dropped: it either
// finished or was rolled back, and planning starts again from the
// topology.
func (r *MeshClusterReconciler) planResume(mc *meshv1.MeshCluster, t *topology.Topology, obs *status.Observation) *operation {
	for _, mig := range obs.Migrations {
		move := topology.Move{Shard: uint16(mig.Shard), From: mig.From, To: mig.To}
		if s, ok := t.Shard(move.Shard); ok && s.Fenced && s.Owner == move.From {
			op := r.moveOperation(mc, "Resuming", move, false, 0)
			op.message = fmt.Sprintf("resuming the recorded move of shard %d from %s to %s", move.Shard, move.From, move.To)
			obs.Operation = &status.Operation{Reason: op.reason, Message: op.message}
			obs.Migrations = []meshv1.MigrationStatus{mig}
			return op
		}
	}
	obs.Migrations = nil
	var fenced []uint16
	for _, s := range t.Shards {
		if s.Fenced {
			fenced = append(fenced, s.ID)
		}
	}
	if len(fenced) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unfencing shards %v (no move recorded for them)", fenced)
	obs.Operation = &status.Operation{Reason: "Resuming", Message: msg}
	return &operation{reason: "Resuming", message: msg, run: func(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error {
		next := t.Clone()
		next.Epoch++
		for i := range next.Shards {
			next.Shards[i].Fenced = false
		}
		return recordAndPush(ctx, d, next)
	}}
}
