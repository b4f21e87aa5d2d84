// Package status computes a MeshCluster's conditions from what the
// reconciler observed, one file per condition. Each function is pure: it
// takes the observation and returns the condition, so the reconciler can
// compare the computed status with the stored one and write only when
// something changed.
package status

import (
	appsv1 "k8s.io/api/apps/v1"

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
}

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
	return sts.Status.UpdatedReplicas == want && sts.Status.Replicas == want &&
		(sts.Status.UpdateRevision == "" || sts.Status.CurrentRevision == sts.Status.UpdateRevision)
}
