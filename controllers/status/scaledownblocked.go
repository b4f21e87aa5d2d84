package status

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
)

// ScaleDownBlocked is True when a requested scale-down was not executed;
// its message says why.
func ScaleDownBlocked(o Observation) metav1.Condition {
	c := metav1.Condition{Type: meshv1.ConditionScaleDownBlocked, ObservedGeneration: o.Cluster.Generation}
	if o.ScaleDownBlocked != "" {
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, "UnsafeScaleDown", o.ScaleDownBlocked
	} else {
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "NoScaleDownPending", "no scale-down is waiting"
	}
	return c
}
