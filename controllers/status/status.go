package status

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
)

// Compute returns the status the cluster should have after this reconcile,
// starting from the stored status so condition transition times only move
// when a condition changes.
func Compute(o Observation, selector string) meshv1.MeshClusterStatus {
	s := *o.Cluster.Status.DeepCopy()
	s.ObservedGeneration = o.Cluster.Generation
	s.Selector = selector
	s.ShardCount = o.Cluster.Spec.Shards.Count
	s.ReadyNodes = 0
	s.Nodes = 0
	if o.StatefulSet != nil {
		s.ReadyNodes = o.StatefulSet.Status.ReadyReplicas
		// Until the operator keeps a topology, every pod beyond the standbys
		// counts as an active node.
		// TODO(issue 8): count the topology's active members instead.
		replicas := int32(0)
		if o.StatefulSet.Spec.Replicas != nil {
			replicas = *o.StatefulSet.Spec.Replicas
		}
		s.Nodes = max(replicas-o.Cluster.Spec.Standby.Count(), 0)
	}
	for _, c := range []metav1.Condition{Available(o), Progressing(o), Degraded(o), ScaleDownBlocked(o)} {
		meta.SetStatusCondition(&s.Conditions, c)
	}
	s.Phase = phase(o, s.Conditions)
	return s
}

func phase(o Observation, conds []metav1.Condition) meshv1.Phase {
	switch {
	case o.Cluster.DeletionTimestamp != nil:
		return meshv1.PhaseDeleting
	case o.Cluster.IsPaused():
		return meshv1.PhasePaused
	case o.StatefulSet == nil:
		return meshv1.PhasePending
	case meta.IsStatusConditionTrue(conds, meshv1.ConditionDegraded):
		return meshv1.PhaseDegraded
	case !meta.IsStatusConditionTrue(conds, meshv1.ConditionAvailable) && o.Cluster.Status.Phase != meshv1.PhaseRunning:
		return meshv1.PhaseCreating
	case meta.IsStatusConditionTrue(conds, meshv1.ConditionProgressing):
		return meshv1.PhaseScaling
	default:
		return meshv1.PhaseRunning
	}
}

func plural(n int32, noun string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
