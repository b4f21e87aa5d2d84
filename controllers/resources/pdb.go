package resources

import (
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
)

// PodDisruptionBudget limits voluntary disruptions (node drains, evictions)
// of the cluster's pods; see UpdatePodDisruptionBudget for the rule.
func PodDisruptionBudget(mc *meshv1.MeshCluster) *policyv1.PodDisruptionBudget {
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: PDBName(mc), Namespace: mc.Namespace}}
	UpdatePodDisruptionBudget(mc, pdb)
	return pdb
}

// UpdatePodDisruptionBudget sets the fields the operator owns. The budget
// follows the roles the spec provides:
//
//   - With a standby (standby.replicas ≥ 1): maxUnavailable 1. An evicted
//     node drains on SIGTERM (refuses writes, flushes, waits for its
//     followers to hold what it accepted) and the operator promotes a
//     standby for its shards; one pod at a time, and none while any pod
//     is already unavailable, so a shard's owner and its follower are
//     never taken by one drain. Under ackPolicy Standby every acknowledged
//     event is on a standby already; under Leader the drain's wait is what
//     keeps them, as for any owner failure.
//   - Without a standby: maxUnavailable 0, no voluntary eviction at all.
//     Every pod is then an active that owns shards and has no follower to
//     promote: an eviction would leave its shards unwritable until the pod
//     is back and, in Memory storage, lose their logs. To drain a
//     Kubernetes node, give the cluster a standby first (the budget then
//     allows one eviction at a time), or scale it down.
//
// The budget selects every pod (roles live in the topology, not in pod
// labels, and a failover changes them without touching the pods), so the
// rule is the safe one for the pod that matters most: an active owner.
func UpdatePodDisruptionBudget(mc *meshv1.MeshCluster, pdb *policyv1.PodDisruptionBudget) {
	pdb.Labels = mergeLabels(pdb.Labels, Labels(mc))
	pdb.Spec.Selector = &metav1.LabelSelector{MatchLabels: SelectorLabels(mc)}
	unavailable := int32(0)
	if mc.Spec.Standby.Count() > 0 {
		unavailable = 1
	}
	pdb.Spec.MaxUnavailable = ptr.To(intstr.FromInt32(unavailable))
	pdb.Spec.MinAvailable = nil
}
