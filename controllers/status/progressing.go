package status

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
)

// Progressing is True while the StatefulSet is being created, resized or
// rolled out, or while the operator moves shards (what moves is the
// message).
func Progressing(o Observation) metav1.Condition {
	c := metav1.Condition{Type: meshv1.ConditionProgressing, ObservedGeneration: o.Cluster.Generation}
	sts := o.StatefulSet
	switch {
	case o.Operation != nil:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, o.Operation.Reason, o.Operation.Message
	case sts == nil:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, "Creating", "creating the nodes' StatefulSet"
	case !rolledOut(sts):
		c.Status, c.Reason = metav1.ConditionTrue, "RollingOut"
		want := int32(0)
		if sts.Spec.Replicas != nil {
			want = *sts.Spec.Replicas
		}
		c.Message = fmt.Sprintf("%d of %d pods at the latest revision, %d ready", sts.Status.UpdatedReplicas, want, sts.Status.ReadyReplicas)
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "Stable", "every pod runs the latest revision"
	}
	return c
}
