package status

import (
	"fmt"
	"net"
	"slices"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/node/topology"
)

// Compute returns the status the cluster should have after this reconcile,
// starting from the stored status so condition transition times only move
// when a condition changes.
func Compute(o Observation, selector string) meshv1.MeshClusterStatus {
	s := *o.Cluster.Status.DeepCopy()
	s.ObservedGeneration = o.Cluster.Generation
	s.Selector = selector
	s.ReadyNodes = 0
	if o.StatefulSet != nil {
		s.ReadyNodes = o.StatefulSet.Status.ReadyReplicas
	}
	RecordTopology(&s, o)
	s.Migrations = o.Migrations
	if o.Autoscale != nil {
		s.Autoscale = o.Autoscale
	}
	if o.UpdatePlanned {
		s.Update = o.Update
	}
	for _, c := range []metav1.Condition{Available(o), Progressing(o), Degraded(o), ScaleDownBlocked(o), RulesValid(o)} {
		meta.SetStatusCondition(&s.Conditions, c)
	}
	s.Phase = phase(o, s.Conditions)
	return s
}

func phase(o Observation, conds []metav1.Condition) meshv1.Phase {
	switch {
	case o.Cluster.DeletionTimestamp != nil:
		return meshv1.PhaseDeleting
	case o.Cluster.IsPaused():
		return meshv1.PhasePaused
	case o.StatefulSet == nil:
		return meshv1.PhasePending
	case meta.IsStatusConditionTrue(conds, meshv1.ConditionDegraded):
		return meshv1.PhaseDegraded
	case !meta.IsStatusConditionTrue(conds, meshv1.ConditionAvailable) && !Started(o.Cluster):
		return meshv1.PhaseCreating
	case o.Operation != nil && o.Operation.Reason == ReasonFailingOver:
		return meshv1.PhaseFailingOver
	case meta.IsStatusConditionTrue(conds, meshv1.ConditionProgressing) && (rolling(o) || rotating(o)):
		return meshv1.PhaseUpdating
	case meta.IsStatusConditionTrue(conds, meshv1.ConditionProgressing):
		return meshv1.PhaseScaling
	default:
		return meshv1.PhaseRunning
	}
}

// rolling says a rolling update is in progress (status.update after this
// pass).
func rolling(o Observation) bool {
	if o.UpdatePlanned {
		return o.Update != nil
	}
	return o.Cluster.Status.Update != nil
}

// rotating says this pass reports a credential rotation step: the nodes'
// configuration (their keys) is being updated, not their number.
func rotating(o Observation) bool {
	return o.Operation != nil && o.Operation.Reason == ReasonRotatingCredentials
}

func plural(n int32, noun string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// RecordTopology copies o's topology into s: the operator's record, from
// which a restarted operator resumes. Members in o.Leaving are marked
// leaving.
func RecordTopology(s *meshv1.MeshClusterStatus, o Observation) {
	t := o.Topology
	if t == nil {
		s.Nodes, s.ShardCount = 0, 0
		return
	}
	s.Epoch = int64(t.Epoch)
	s.ShardCount = int32(len(t.Shards))
	s.Nodes = 0
	owned := map[string]int32{}
	for _, sh := range t.Shards {
		owned[sh.Owner]++
	}
	members := make([]meshv1.MemberStatus, 0, len(t.Members))
	for _, m := range t.Members {
		host, _, _ := net.SplitHostPort(m.Admin)
		ms := meshv1.MemberStatus{Name: m.Name, Address: host, Role: meshv1.Role(m.Role), Ready: o.PodReady[m.Name], Shards: owned[m.Name]}
		// Keep what the operator learned of the member's lag (and its
		// revision, unless this pass saw its pod).
		for _, old := range s.Members {
			if old.Name == m.Name {
				ms.Lag, ms.Revision = old.Lag, old.Revision
			}
		}
		if rev, ok := o.PodRevision[m.Name]; ok {
			ms.Revision = rev
		}
		ms.Leaving = o.Leaving[m.Name]
		// The subnet the node reported, or the recorded one when it did
		// not answer this pass.
		for _, old := range s.Members {
			if old.Name == m.Name {
				ms.Subnet = old.Subnet
			}
		}
		if sn, ok := o.Subnets[m.Name]; ok {
			ms.Subnet = sn
		}
		if m.Role == topology.Active {
			s.Nodes++
		}
		members = append(members, ms)
	}
	s.Members = members
	idle := map[int32]*metav1.Time{}
	for _, old := range s.Shards {
		idle[old.ID] = old.IdleSince
	}
	if o.IdleSince != nil {
		idle = map[int32]*metav1.Time{}
		for id, at := range o.IdleSince {
			idle[int32(id)] = &at
		}
	}
	shards := make([]meshv1.ShardStatus, 0, len(t.Shards))
	for _, sh := range t.Shards {
		shards = append(shards, meshv1.ShardStatus{ID: int32(sh.ID), Owner: sh.Owner, Followers: slices.Clone(sh.Followers), Fenced: sh.Fenced,
			Draining: sh.Draining, IdleSince: idle[int32(sh.ID)]})
	}
	s.Shards = shards
}
