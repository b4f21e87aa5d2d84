package controllers

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
)

// desiredReplicas decides the StatefulSet's replica count. Growing is
// always allowed. Shrinking is refused: removing a pod before its shards
// and daemons moved away would lose acknowledged events. The returned
// reason goes into the ScaleDownBlocked condition; a Warning Event says the
// same once per change of the requested size.
//
// TODO(issue 8): replace the refusal by the two-phase safe scale-down
// (mark leaving members, move their shards, wait until empty, shrink).
func (r *MeshClusterReconciler) desiredReplicas(_ context.Context, mc *meshv1.MeshCluster, sts *appsv1.StatefulSet) (int32, string) {
	want := mc.Spec.Replicas()
	current := want
	if sts.Spec.Replicas != nil {
		current = *sts.Spec.Replicas
	}
	if want >= current {
		return want, ""
	}
	reason := fmt.Sprintf("scale-down from %d to %d pods refused: safe scale-down (moving shards off the leaving nodes first) is not implemented yet, so the StatefulSet keeps %d pods", current, want, current)
	if !scaleDownAlreadyReported(mc, reason) {
		r.Recorder.Eventf(mc, sts, corev1.EventTypeWarning, "ScaleDownBlocked", "Scale", "%s", reason)
	}
	return current, reason
}

func scaleDownAlreadyReported(mc *meshv1.MeshCluster, reason string) bool {
	for _, c := range mc.Status.Conditions {
		if c.Type == meshv1.ConditionScaleDownBlocked {
			return c.Status == metav1.ConditionTrue && c.Message == reason
		}
	}
	return false
}
