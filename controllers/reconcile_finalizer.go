package controllers

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/resources"
)

// Finalizer holds a MeshCluster until its pods are gone (each node drains
// on SIGTERM) and its data PVCs were kept or deleted per
// spec.storage.pvcRetention.
const Finalizer = "mesh.purplerain.io/cleanup"

// podsGoneTimeout bounds how long deletion waits for pods: a pod on a lost
// Kubernetes node may never report its end, and a cluster must never be
// stuck in deletion forever.
const podsGoneTimeout = 5 * time.Minute

// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch;delete

// ensureFinalizer adds the finalizer to a live cluster.
func (r *MeshClusterReconciler) ensureFinalizer(ctx context.Context, mc *meshv1.MeshCluster) error {
	if controllerutil.ContainsFinalizer(mc, Finalizer) {
		return nil
	}
	patch := client.MergeFrom(mc.DeepCopy())
	controllerutil.AddFinalizer(mc, Finalizer)
	if err := r.Patch(ctx, mc, patch); err != nil {
		return fmt.Errorf("add finalizer: %w", err)
	}
	return nil
}

// reconcileDelete runs while the cluster is being deleted: it deletes the
// StatefulSet (its pods drain and stop), waits until no pod is left, applies
// the PVC retention policy, then releases the finalizer (the garbage
// collector removes the other children).
func (r *MeshClusterReconciler) reconcileDelete(ctx context.Context, mc *meshv1.MeshCluster) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(mc, Finalizer) {
		return ctrl.Result{}, nil
	}
	sts := &appsv1.StatefulSet{}
	err := r.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resources.StatefulSetName(mc)}, sts)
	switch {
	case err == nil && sts.DeletionTimestamp == nil:
		if err := r.Delete(ctx, sts, client.PropagationPolicy("Background")); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, fmt.Errorf("delete StatefulSet: %w", err)
		}
	case err != nil && !apierrors.IsNotFound(err):
		return ctrl.Result{}, fmt.Errorf("get StatefulSet: %w", err)
	}

	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.InNamespace(mc.Namespace), client.MatchingLabels(resources.SelectorLabels(mc))); err != nil {
		return ctrl.Result{}, fmt.Errorf("list pods: %w", err)
	}
	if n := len(pods.Items); n > 0 {
		waited := time.Since(mc.DeletionTimestamp.Time)
		if waited < podsGoneTimeout {
			return ctrl.Result{RequeueAfter: 2 * time.Second}, nil
		}
		r.Recorder.Eventf(mc, nil, corev1.EventTypeWarning, "PodsNotGone", "Delete",
			"%d pods still exist %s after deletion started; releasing the cluster anyway (their data PVCs are kept)", n, waited.Round(time.Second))
		return ctrl.Result{}, r.releaseFinalizer(ctx, mc)
	}

	if mc.Spec.Storage.PVCRetention == meshv1.PVCDelete {
		if err := r.deleteDataPVCs(ctx, mc, 0); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{}, r.releaseFinalizer(ctx, mc)
}

// deleteDataPVCs deletes the data PVCs of ordinals >= from.
func (r *MeshClusterReconciler) deleteDataPVCs(ctx context.Context, mc *meshv1.MeshCluster, from int) error {
	pvcs := &corev1.PersistentVolumeClaimList{}
	if err := r.List(ctx, pvcs, client.InNamespace(mc.Namespace), client.MatchingLabels(resources.SelectorLabels(mc))); err != nil {
		return fmt.Errorf("list PVCs: %w", err)
	}
	for i := range pvcs.Items {
		pvc := &pvcs.Items[i]
		ord, ok := resources.DataPVCOrdinal(mc, pvc.Name)
		if !ok || ord < from || pvc.DeletionTimestamp != nil {
			continue
		}
		if err := r.Delete(ctx, pvc); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete PVC %s: %w", pvc.Name, err)
		}
		r.Recorder.Eventf(mc, pvc, corev1.EventTypeNormal, "Deleted", "Delete", "deleted data PVC %s (pvcRetention: Delete)", pvc.Name)
	}
	return nil
}

func (r *MeshClusterReconciler) releaseFinalizer(ctx context.Context, mc *meshv1.MeshCluster) error {
	patch := client.MergeFrom(mc.DeepCopy())
	controllerutil.RemoveFinalizer(mc, Finalizer)
	if err := r.Patch(ctx, mc, patch); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("remove finalizer: %w", err)
	}
	return nil
}
