package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/node/orchestrate"
	"github.com/purplerain/mesh-operator/node/topology"
)

// planRebalance returns the next shard move towards max skew 1 between
// the actives (after a scale-up the new actives own nothing), or nil when
// the cluster is balanced.
//
// One move per pass, so migration.maxConcurrent is honoured for any value;
// TODO(issue 8): run up to maxConcurrent handoffs of distinct shards at
// once (the Driver records each step of one handoff; concurrent handoffs
// need their records merged into one topology).
func (r *MeshClusterReconciler) planRebalance(mc *meshv1.MeshCluster, t *topology.Topology) *operation {
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
	return &operation{reason: reason, message: msg, scaleDown: scaleDown, run: func(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error {
		return handoff(ctx, d, t, move, func(reason, format string, args ...any) {
			r.Recorder.Eventf(mc, nil, corev1.EventTypeNormal, reason, "Move", format, args...)
		})
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
