// Package status computes a MeshCluster's conditions from what the
// reconciler observed, one file per condition. Each function is pure: it
// takes the observation and returns the condition, so the reconciler can
// compare the computed status with the stored one and write only when
// something changed.
package status

import (
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node/topology"
)

// Observation is what one reconcile saw and decided.
type Observation struct {
	Cluster *meshv1.MeshCluster
	// StatefulSet is the nodes' StatefulSet, nil before it exists.
	StatefulSet *appsv1.StatefulSet
	// ScaleDownBlocked, when not empty, says why a requested scale-down was
	// not executed.
	ScaleDownBlocked string
	// ReconcileError is the last error of this reconcile, if any.
	ReconcileError error
	// OperatorKey signs admin calls to the cluster's nodes (nil before the
	// credentials exist).
	OperatorKey *identity.KeyPair
	// Topology is the cluster's topology after this reconcile (nil until
	// the first one could be placed), with the readiness of its members.
	Topology *topology.Topology
	// PodReady says which pods are ready, by name.
	PodReady map[string]bool
	// Leaving names the members a scale-down is emptying (status
	// members[].leaving).
	Leaving map[string]bool
	// Operation, when set, is the data-plane step this pass runs after the
	// status update (a shard move, a scale-down step, a promotion).
	Operation *Operation
	// Migrations are the shard moves in flight (status.migrations): a
	// move is recorded before its first step, so a restarted operator
	// resumes it.
	Migrations []meshv1.MigrationStatus
	// Autoscale, when not nil, is this pass's shard autoscaler record
	// (status.autoscale); nil keeps the recorded one.
	Autoscale *meshv1.AutoscaleStatus
	// IdleSince, when not nil, is when each idle added shard was first seen
	// idle (status.shards[].idleSince); nil keeps the recorded values.
	IdleSince map[uint16]metav1.Time
	// RulesError is why spec.rules is invalid (nil: valid); RulesValid
	// reports it. ActiveRules is how many rules the nodes are given (the
	// last valid set while RulesError is set).
	RulesError  error
	ActiveRules int
	// Subnets are the subnets the members reported this pass, by name;
	// members missing keep their recorded subnet.
	Subnets map[string]string
	// UpdatePlanned says this pass decided the rolling update record:
	// status.update becomes Update (nil: no roll in progress). Otherwise
	// (paused, or no decision) the stored record is kept.
	UpdatePlanned bool
	Update        *meshv1.UpdateStatus
	// PodRevision is the StatefulSet revision each pod runs (its
	// controller-revision-hash label), by name; nil keeps the members'
	// recorded revisions.
	PodRevision map[string]string
}

// Operation says what the operator is moving; Progressing reports it.
type Operation struct {
	// Reason is Rebalancing, ScalingDown, FailingOver or Autoscaling
	// (among others).
	Reason  string
	Message string
}

// ReasonFailingOver is the Progressing reason of a promotion; the phase
// is FailingOver while it is reported.
const ReasonFailingOver = "FailingOver"

// ReasonRollingUpdate is the Progressing reason while the operator rolls
// pods to a new revision; the phase is Updating while it is reported.
const ReasonRollingUpdate = "RollingUpdate"

// ReasonRotatingCredentials is the Progressing reason of a credential
// rotation step (controllers/reconcile_rotation.go uses the same string);
// the phase is Updating while it is reported, as for a rolling update.
const ReasonRotatingCredentials = "RotatingCredentials"

// rolledOut says the StatefulSet controller has seen the latest
// spec and every pod runs it.
func rolledOut(sts *appsv1.StatefulSet) bool {
	if sts.Status.ObservedGeneration < sts.Generation {
		return false
	}
	want := int32(1)
	if sts.Spec.Replicas != nil {
		want = *sts.Spec.Replicas
	}
	// Under OnDelete the StatefulSet controller never advances
	// currentRevision: every pod at updateRevision is the whole story.
	onDelete := sts.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType
	return sts.Status.UpdatedReplicas == want && sts.Status.Replicas == want &&
		(onDelete || sts.Status.UpdateRevision == "" || sts.Status.CurrentRevision == sts.Status.UpdateRevision)
}
