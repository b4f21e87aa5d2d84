package resources

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
)

func TestPodDisruptionBudgetFollowsTheStandbys(t *testing.T) {
	cases := []struct {
		name    string
		standby *int32
		ack     meshv1.AckPolicy
		storage meshv1.StorageMode
		want    int
	}{
		{"one standby, ackPolicy Leader", ptr.To[int32](1), meshv1.AckLeader, meshv1.StorageMemory, 1},
		{"two standbys, ackPolicy Standby", ptr.To[int32](2), meshv1.AckStandby, meshv1.StorageDisk, 1},
		{"standby count defaulted (1)", nil, meshv1.AckLeader, meshv1.StorageMemory, 1},
		{"no standby, memory: every pod is an owner nobody can replace", ptr.To[int32](0), meshv1.AckLeader, meshv1.StorageMemory, 0},
		{"no standby, disk", ptr.To[int32](0), meshv1.AckLeader, meshv1.StorageDisk, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mc := &meshv1.MeshCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "ns"}}
			mc.Spec.Nodes = 3
			mc.Spec.Standby.Replicas = tc.standby
			mc.Spec.Standby.AckPolicy = tc.ack
			mc.Spec.Storage.Mode = tc.storage
			pdb := PodDisruptionBudget(mc)
			if pdb.Spec.MinAvailable != nil || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != tc.want {
				t.Fatalf("maxUnavailable %v minAvailable %v, want maxUnavailable %d", pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable, tc.want)
			}
			if got := pdb.Spec.Selector.MatchLabels; len(got) == 0 || got[LabelInstance] != "demo" {
				t.Fatalf("selector %v does not select the cluster's pods", got)
			}
			// Removing the standby later tightens the budget in place.
			mc.Spec.Standby.Replicas = ptr.To[int32](0)
			UpdatePodDisruptionBudget(mc, pdb)
			if pdb.Spec.MaxUnavailable.IntValue() != 0 {
				t.Fatalf("after removing the standbys: maxUnavailable %v, want 0", pdb.Spec.MaxUnavailable)
			}
		})
	}
}
