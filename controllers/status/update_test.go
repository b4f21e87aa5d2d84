package status

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/node/topology"
)

// Under OnDelete the StatefulSet controller never moves currentRevision:
// every pod at updateRevision is rolled out. RollingUpdate still needs
// currentRevision to catch up.
func TestProgressingUnderOnDeleteIgnoresCurrentRevision(t *testing.T) {
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Generation: 3}}
	sts.Spec.Replicas = ptr.To[int32](4)
	sts.Status = appsv1.StatefulSetStatus{ObservedGeneration: 3, Replicas: 4, ReadyReplicas: 4, UpdatedReplicas: 4, CurrentRevision: "r1", UpdateRevision: "r2"}
	o := Observation{Cluster: &meshv1.MeshCluster{}, StatefulSet: sts}

	sts.Spec.UpdateStrategy.Type = appsv1.OnDeleteStatefulSetStrategyType
	if c := Progressing(o); c.Status != metav1.ConditionFalse {
		t.Fatalf("OnDelete, every pod updated: %+v", c)
	}
	sts.Status.UpdatedReplicas = 3
	if c := Progressing(o); c.Status != metav1.ConditionTrue || c.Reason != "RollingOut" {
		t.Fatalf("OnDelete, a pod at the old revision: %+v", c)
	}
	sts.Status.UpdatedReplicas = 4
	sts.Spec.UpdateStrategy.Type = appsv1.RollingUpdateStatefulSetStrategyType
	if c := Progressing(o); c.Status != metav1.ConditionTrue {
		t.Fatalf("RollingUpdate before currentRevision caught up: %+v", c)
	}
}

// status.update is kept unless the pass decided it, and the phase is
// Updating while a roll is recorded and Progressing.
func TestComputeRecordsTheRollAndItsPhase(t *testing.T) {
	sts := &appsv1.StatefulSet{}
	sts.Spec.Replicas = ptr.To[int32](2)
	sts.Spec.UpdateStrategy.Type = appsv1.OnDeleteStatefulSetStrategyType
	sts.Status = appsv1.StatefulSetStatus{Replicas: 2, ReadyReplicas: 2, UpdatedReplicas: 1, UpdateRevision: "r2"}
	topo := &topology.Topology{Cluster: "c", Epoch: 4, LeaseMillis: 1000, BaseShards: 1,
		Members: []topology.Member{{Name: "c-0", Role: topology.Active, Admin: "10.0.0.1:9440"}, {Name: "c-1", Role: topology.Standby, Admin: "10.0.0.2:9440"}},
		Shards:  []topology.Shard{{ID: 0, Owner: "c-0", Followers: []string{"c-1"}}}}
	mc := &meshv1.MeshCluster{}
	mc.Status.Phase = meshv1.PhaseRunning
	mc.Status.Update = &meshv1.UpdateStatus{Revision: "r2", Pod: "c-1", Step: "Restarting"}
	mc.Status.Members = []meshv1.MemberStatus{{Name: "c-0", Revision: "r1"}, {Name: "c-1", Revision: "r1"}}
	ready := map[string]bool{"c-0": true, "c-1": true}
	op := &Operation{Reason: ReasonRollingUpdate, Message: "waiting for c-1"}

	// Paused or undecided: the record stays, c-1's revision too (its pod
	// was not seen).
	s := Compute(Observation{Cluster: mc, StatefulSet: sts, Topology: topo, PodReady: ready, Operation: op, PodRevision: map[string]string{"c-0": "r2"}}, "")
	if s.Update == nil || s.Update.Pod != "c-1" || s.Phase != meshv1.PhaseUpdating {
		t.Fatalf("kept: update %+v phase %s", s.Update, s.Phase)
	}
	if s.Members[0].Revision != "r2" || s.Members[1].Revision != "r1" {
		t.Fatalf("revisions: %+v", s.Members)
	}
	// Decided: the roll is over.
	s = Compute(Observation{Cluster: mc, StatefulSet: sts, Topology: topo, PodReady: ready, UpdatePlanned: true}, "")
	if s.Update != nil {
		t.Fatalf("cleared: %+v", s.Update)
	}
	if !meta.IsStatusConditionTrue(s.Conditions, meshv1.ConditionProgressing) || s.Phase != meshv1.PhaseScaling {
		t.Fatalf("a pod still at the old revision without a roll recorded: phase %s, %v", s.Phase, s.Conditions)
	}
}

// A credential rotation step updates the nodes' keys, not their number:
// the phase is Updating while Progressing reports it, not Scaling (which a
// shard move still gets).
func TestPhaseDuringACredentialRotationIsUpdating(t *testing.T) {
	sts := &appsv1.StatefulSet{}
	sts.Spec.Replicas = ptr.To[int32](2)
	sts.Status = appsv1.StatefulSetStatus{Replicas: 2, ReadyReplicas: 2, UpdatedReplicas: 2}
	topo := &topology.Topology{Cluster: "c", Epoch: 4, LeaseMillis: 1000, BaseShards: 1,
		Members: []topology.Member{{Name: "c-0", Role: topology.Active, Admin: "10.0.0.1:9440"}, {Name: "c-1", Role: topology.Active, Admin: "10.0.0.2:9440"}},
		Shards:  []topology.Shard{{ID: 0, Owner: "c-0"}}}
	mc := &meshv1.MeshCluster{}
	mc.Status.Phase = meshv1.PhaseRunning
	ready := map[string]bool{"c-0": true, "c-1": true}
	for _, tc := range []struct {
		reason string
		want   meshv1.Phase
	}{
		{ReasonRotatingCredentials, meshv1.PhaseUpdating},
		{"Rebalancing", meshv1.PhaseScaling},
	} {
		s := Compute(Observation{Cluster: mc, StatefulSet: sts, Topology: topo, PodReady: ready,
			Operation: &Operation{Reason: tc.reason, Message: "a step"}}, "")
		c := meta.FindStatusCondition(s.Conditions, meshv1.ConditionProgressing)
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != tc.reason || s.Phase != tc.want {
			t.Fatalf("%s: phase %s, Progressing %+v; want phase %s", tc.reason, s.Phase, c, tc.want)
		}
	}
}
