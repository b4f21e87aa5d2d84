package status

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
)

// Degraded is True when the last reconcile failed, when the cluster was
// available once and has fewer ready active nodes than wanted, or while a
// shard move aborted under onTimeout Abort holds (reason MigrationAborted,
// the message names the shards): until the spec is edited (which tries the
// move again) or the move completes otherwise.
func Degraded(o Observation) metav1.Condition {
	c := metav1.Condition{Type: meshv1.ConditionDegraded, ObservedGeneration: o.Cluster.Generation}
	switch {
	case o.ReconcileError != nil:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, "ReconcileFailed", o.ReconcileError.Error()
	case o.Topology != nil && Started(o.Cluster) && notReadyOwners(o) > 0:
		// It was running: an owner went away.
		c.Status, c.Reason = metav1.ConditionTrue, "OwnerNotReady"
		c.Message = plural(int32(notReadyOwners(o)), "shard") + " without a ready owner"
	case len(heldAborts(o)) > 0:
		var parts []string
		for _, m := range heldAborts(o) {
			parts = append(parts, fmt.Sprintf("shard %d stays with %s: its move to %s was aborted (migration.timeout, onTimeout Abort)", m.Shard, m.From, m.To))
		}
		c.Status, c.Reason = metav1.ConditionTrue, ReasonMigrationAborted
		c.Message = strings.Join(parts, "; ") + "; edit the MeshCluster to try again"
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "Healthy", "no problem observed"
	}
	return c
}

func notReadyOwners(o Observation) int {
	n := 0
	for _, s := range o.Topology.Shards {
		if !o.PodReady[s.Owner] {
			n++
		}
	}
	return n
}

// Started says the cluster was available once: its phase moved past
// Pending and Creating. An owner that is not ready then is a failure, not
// a pod still starting.
func Started(mc *meshv1.MeshCluster) bool {
	switch mc.Status.Phase {
	case "", meshv1.PhasePending, meshv1.PhaseCreating:
		return false
	case meshv1.PhasePaused, meshv1.PhaseDeleting:
		return mc.Status.Epoch > 0
	}
	return true
}

// ReasonMigrationAborted is the Degraded (and Progressing) reason while a
// move aborted under onTimeout Abort holds.
const ReasonMigrationAborted = "MigrationAborted"

// migrationPhaseAborted is the phase of an aborted move in
// status.migrations.
const migrationPhaseAborted = "Aborted"

// heldAborts are the aborted moves in o.Migrations that still hold: the
// spec was not edited since it was last observed (an edit tries them
// again) and the source still owns the shard in o.Topology.
func heldAborts(o Observation) []meshv1.MigrationStatus {
	if o.Topology == nil || o.Cluster.Generation != o.Cluster.Status.ObservedGeneration {
		return nil
	}
	var out []meshv1.MigrationStatus
	for _, m := range o.Migrations {
		if m.Phase != migrationPhaseAborted {
			continue
		}
		if s, ok := o.Topology.Shard(uint16(m.Shard)); ok && s.Owner == m.From {
			out = append(out, m)
		}
	}
	return out
}
