package controllers

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/diff"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/resources"
	"github.com/purplerain/mesh-operator/controllers/status"
	"github.com/purplerain/mesh-operator/engine/identity"
)

// apply creates obj or updates it through mutate, sets the owner reference,
// and records an Event when something was written. controllerutil compares
// the object before and after mutate and skips the write when they are
// equal.
func (r *MeshClusterReconciler) apply(ctx context.Context, mc *meshv1.MeshCluster, obj client.Object, mutate func() error) error {
	kind := r.kindOf(obj)
	var before client.Object
	op, err := controllerutil.CreateOrUpdate(ctx, r.Client, obj, func() error {
		before = obj.DeepCopyObject().(client.Object)
		if err := mutate(); err != nil {
			return err
		}
		return controllerutil.SetControllerReference(mc, obj, r.Scheme)
	})
	if err != nil {
		r.Recorder.Eventf(mc, obj, corev1.EventTypeWarning, "ApplyFailed", "Apply", "%s %s: %v", kind, obj.GetName(), err)
		return fmt.Errorf("apply %s %s: %w", kind, obj.GetName(), err)
	}
	switch op {
	case controllerutil.OperationResultCreated:
		r.Recorder.Eventf(mc, obj, corev1.EventTypeNormal, "Created", "Create", "created %s %s", kind, obj.GetName())
	case controllerutil.OperationResultUpdated:
		// Say what changed: an update on every pass would break the
		// steady-state no-write invariant, and this is how to find why.
		if logger := log.FromContext(ctx).V(1); logger.Enabled() {
			logger.Info("updated child", "kind", kind, "name", obj.GetName(), "diff", diff.Diff(before, obj))
		}
		r.Recorder.Eventf(mc, obj, corev1.EventTypeNormal, "Updated", "Update", "updated %s %s", kind, obj.GetName())
	}
	return nil
}

// kindOf names obj's kind for Events and errors.
func (r *MeshClusterReconciler) kindOf(obj client.Object) string {
	gvk, err := apiutil.GVKForObject(obj, r.Scheme)
	if err != nil {
		return fmt.Sprintf("%T", obj)
	}
	return gvk.Kind
}

func (r *MeshClusterReconciler) reconcileConfigMap(ctx context.Context, mc *meshv1.MeshCluster, operatorKey *identity.KeyPair) (*corev1.ConfigMap, error) {
	pub, err := operatorKey.MarshalPublicKeyPEM()
	if err != nil {
		return nil, err
	}
	cm := &corev1.ConfigMap{}
	cm.Name, cm.Namespace = resources.ConfigMapName(mc), mc.Namespace
	err = r.apply(ctx, mc, cm, func() error { return resources.UpdateConfigMap(mc, cm, pub) })
	return cm, err
}

func (r *MeshClusterReconciler) reconcileServices(ctx context.Context, mc *meshv1.MeshCluster) error {
	headless := &corev1.Service{}
	headless.Name, headless.Namespace = resources.HeadlessServiceName(mc), mc.Namespace
	if err := r.apply(ctx, mc, headless, func() error {
		resources.UpdateHeadlessService(mc, headless)
		return nil
	}); err != nil {
		return err
	}
	clientSvc := &corev1.Service{}
	clientSvc.Name, clientSvc.Namespace = resources.ClientServiceName(mc), mc.Namespace
	return r.apply(ctx, mc, clientSvc, func() error {
		resources.UpdateClientService(mc, clientSvc)
		return nil
	})
}

// reconcileStatefulSet applies the StatefulSet with the replica count
// decided by desiredReplicas (reconcile_scaling.go).
func (r *MeshClusterReconciler) reconcileStatefulSet(ctx context.Context, mc *meshv1.MeshCluster, configHash string, obs *status.Observation) (*appsv1.StatefulSet, error) {
	sts := &appsv1.StatefulSet{}
	sts.Name, sts.Namespace = resources.StatefulSetName(mc), mc.Namespace
	err := r.apply(ctx, mc, sts, func() error {
		if sts.CreationTimestamp.IsZero() {
			built := resources.StatefulSet(mc, mc.Spec.Replicas(), configHash)
			sts.Labels, sts.Spec = built.Labels, built.Spec
			return nil
		}
		resources.UpdateStatefulSet(mc, sts, r.desiredReplicas(mc, sts), configHash)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if mc.Spec.Storage.PVCRetention == meshv1.PVCDelete && sts.Spec.Replicas != nil {
		// The data PVCs of ordinals the StatefulSet no longer has: their
		// members left the topology before it shrank.
		if err := r.deleteDataPVCs(ctx, mc, int(*sts.Spec.Replicas)); err != nil {
			return nil, err
		}
	}
	return sts, nil
}

func (r *MeshClusterReconciler) reconcilePodDisruptionBudget(ctx context.Context, mc *meshv1.MeshCluster) error {
	pdb := &policyv1.PodDisruptionBudget{}
	pdb.Name, pdb.Namespace = resources.PDBName(mc), mc.Namespace
	return r.apply(ctx, mc, pdb, func() error {
		resources.UpdatePodDisruptionBudget(mc, pdb)
		return nil
	})
}
