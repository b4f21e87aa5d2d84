package status

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
)

// Degraded is True when the last reconcile failed, or when the cluster was
// available once and has fewer ready active nodes than wanted.
func Degraded(o Observation) metav1.Condition {
	c := metav1.Condition{Type: meshv1.ConditionDegraded, ObservedGeneration: o.Cluster.Generation}
	switch {
	case o.ReconcileError != nil:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, "ReconcileFailed", o.ReconcileError.Error()
	case o.Topology != nil && Started(o.Cluster) && notReadyOwners(o) > 0:
		// It was running: an owner went away.
		c.Status, c.Reason = metav1.ConditionTrue, "OwnerNotReady"
		c.Message = plural(int32(notReadyOwners(o)), "shard") + " without a ready owner"
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
