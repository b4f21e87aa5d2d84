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
	case o.StatefulSet != nil && rolledOut(o.StatefulSet) && o.StatefulSet.Status.ReadyReplicas < o.Cluster.Spec.Nodes:
		c.Status, c.Reason = metav1.ConditionTrue, "NodesNotReady"
		c.Message = plural(o.StatefulSet.Status.ReadyReplicas, "node") + " ready of " + plural(o.Cluster.Spec.Nodes, "active node")
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "Healthy", "no problem observed"
	}
	return c
}
