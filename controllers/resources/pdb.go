package resources

import (
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
)

// PodDisruptionBudget lets voluntary disruptions (node drains) take one
// mesh node at a time, so a shard's owner and its standby are never both
// evicted by one drain.
func PodDisruptionBudget(mc *meshv1.MeshCluster) *policyv1.PodDisruptionBudget {
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: PDBName(mc), Namespace: mc.Namespace}}
	UpdatePodDisruptionBudget(mc, pdb)
	return pdb
}

// UpdatePodDisruptionBudget sets the fields the operator owns.
// TODO(issue 8): keep the budget consistent with roles (a cluster with no
// standby and one active cannot lose its only owner to a drain).
func UpdatePodDisruptionBudget(mc *meshv1.MeshCluster, pdb *policyv1.PodDisruptionBudget) {
	pdb.Labels = mergeLabels(pdb.Labels, Labels(mc))
	pdb.Spec.Selector = &metav1.LabelSelector{MatchLabels: SelectorLabels(mc)}
	pdb.Spec.MaxUnavailable = ptr.To(intstr.FromInt32(1))
	pdb.Spec.MinAvailable = nil
}
