package status

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
)

// Available is True when every shard has an owner whose pod is ready.
func Available(o Observation) metav1.Condition {
	c := metav1.Condition{Type: meshv1.ConditionAvailable, ObservedGeneration: o.Cluster.Generation}
	t := o.Topology
	if t == nil {
		c.Status, c.Reason = metav1.ConditionFalse, "NotPlaced"
		c.Message = "waiting for the active pods to get addresses before placing shards"
		return c
	}
	for _, s := range t.Shards {
		if !o.PodReady[s.Owner] {
			c.Status, c.Reason = metav1.ConditionFalse, "OwnerNotReady"
			c.Message = fmt.Sprintf("shard %d: owner %s is not ready", s.ID, s.Owner)
			return c
		}
	}
	c.Status, c.Reason = metav1.ConditionTrue, "ShardsOwned"
	c.Message = fmt.Sprintf("all %d shards have a ready owner (epoch %d)", len(t.Shards), t.Epoch)
	return c
}
