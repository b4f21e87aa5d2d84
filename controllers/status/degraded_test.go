package status

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/node/topology"
)

// An aborted move makes the cluster Degraded (reason MigrationAborted,
// naming the shard) while it holds: not once the spec is edited (an edit
// tries it again), nor once the shard left its source, nor for a move
// still under way.
func TestDegradedWhileAnAbortedMoveHolds(t *testing.T) {
	topo := &topology.Topology{Cluster: "c", Epoch: 4, LeaseMillis: 1000, BaseShards: 2,
		Members: []topology.Member{{Name: "c-0", Role: topology.Active}, {Name: "c-1", Role: topology.Active}, {Name: "c-2", Role: topology.Active}},
		Shards:  []topology.Shard{{ID: 0, Owner: "c-0"}, {ID: 1, Owner: "c-1"}}}
	ready := map[string]bool{"c-0": true, "c-1": true, "c-2": true}
	mc := &meshv1.MeshCluster{ObjectMeta: metav1.ObjectMeta{Generation: 3}}
	mc.Status.ObservedGeneration = 3
	mc.Status.Phase = meshv1.PhaseRunning
	aborted := meshv1.MigrationStatus{Shard: 1, From: "c-1", To: "c-2", Phase: "Aborted"}
	o := Observation{Cluster: mc, Topology: topo, PodReady: ready, Migrations: []meshv1.MigrationStatus{aborted}}

	c := Degraded(o)
	if c.Status != metav1.ConditionTrue || c.Reason != ReasonMigrationAborted || !strings.Contains(c.Message, "shard 1 stays with c-1") {
		t.Fatalf("aborted move held: %+v", c)
	}
	sts := &appsv1.StatefulSet{}
	if s := Compute(Observation{Cluster: mc, StatefulSet: sts, Topology: topo, PodReady: ready, Migrations: o.Migrations}, ""); !meta.IsStatusConditionTrue(s.Conditions, meshv1.ConditionDegraded) || s.Phase != meshv1.PhaseDegraded {
		t.Fatalf("computed status with an aborted move: phase %s conditions %+v", s.Phase, s.Conditions)
	}

	for name, o := range map[string]Observation{
		"move under way": {Cluster: mc, Topology: topo, PodReady: ready,
			Migrations: []meshv1.MigrationStatus{{Shard: 1, From: "c-1", To: "c-2", Phase: "Handoff"}}},
		"spec edited": {Cluster: func() *meshv1.MeshCluster { m := mc.DeepCopy(); m.Generation = 4; return m }(), Topology: topo, PodReady: ready,
			Migrations: []meshv1.MigrationStatus{aborted}},
		"shard moved since": {Cluster: mc, PodReady: ready, Migrations: []meshv1.MigrationStatus{aborted},
			Topology: func() *topology.Topology { t := topo.Clone(); t.Shards[1].Owner = "c-2"; return t }()},
		"no record": {Cluster: mc, Topology: topo, PodReady: ready},
	} {
		if c := Degraded(o); c.Status != metav1.ConditionFalse {
			t.Errorf("%s: %+v, want not degraded", name, c)
		}
	}
}
