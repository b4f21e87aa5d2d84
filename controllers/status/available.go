package status

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
)

// Available is True when every active node is ready.
//
// TODO(issue 8): once the operator keeps the topology, Available means
// every shard has a ready owner, computed from the topology, not a pod
// count.
func Available(o Observation) metav1.Condition {
	c := metav1.Condition{Type: meshv1.ConditionAvailable, ObservedGeneration: o.Cluster.Generation}
	want := o.Cluster.Spec.Nodes
	switch {
	case o.StatefulSet == nil:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "StatefulSetMissing", "the nodes' StatefulSet does not exist yet"
	case o.StatefulSet.Status.ReadyReplicas >= want:
		c.Status, c.Reason = metav1.ConditionTrue, "NodesReady"
		c.Message = plural(o.StatefulSet.Status.ReadyReplicas, "node") + " ready"
	default:
		c.Status, c.Reason = metav1.ConditionFalse, "NodesNotReady"
		c.Message = plural(o.StatefulSet.Status.ReadyReplicas, "node") + " ready, " + plural(want, "active node") + " wanted"
	}
	return c
}
