package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/resources"
	"github.com/purplerain/mesh-operator/controllers/status"
)

// MeshClusterReconciler reconciles a MeshCluster into its children and
// status. Reconcile is one linear pass that calls one function per
// concern; each concern lives in its own reconcile_*.go file.
type MeshClusterReconciler struct {
	client.Client
	Scheme   *runtime.Scheme
	Recorder events.EventRecorder
	// Leases pushes recorded topologies to the nodes and renews their
	// leases. Nil: topologies are recorded but not pushed (tests of the
	// Kubernetes side alone).
	Leases *LeaseKeeper
	// RotationGrace is how long a credential rotation keeps the old keys
	// trusted after every node switched to the new ones (zero: one
	// minute); see reconcile_rotation.go.
	RotationGrace time.Duration

	// memory is what passes remember of each cluster (failover timers,
	// blocked scale-downs); see orchestration.go.
	memory memories
	// metrics remembers what the Prometheus metrics need (metrics.go).
	metrics clusterMetrics
}

// +kubebuilder:rbac:groups=mesh.purplerain.io,resources=meshclusters,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=mesh.purplerain.io,resources=meshclusters/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=mesh.purplerain.io,resources=meshclusters/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one MeshCluster's children in line with its spec and
// records what it saw in status. It writes nothing when nothing changed.
func (r *MeshClusterReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	defer func() { r.observeReconcile(res, retErr) }()
	logger := log.FromContext(ctx)

	mc := &meshv1.MeshCluster{}
	if err := r.Get(ctx, req.NamespacedName, mc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	// Every line this pass logs names the cluster and the epoch it started
	// from (a step logs the epoch it produced as it goes).
	logger = logger.WithValues("cluster", mc.Name, "epoch", mc.Status.Epoch)
	ctx = log.IntoContext(ctx, logger)
	if mc.DeletionTimestamp != nil {
		if r.Leases != nil {
			r.Leases.Forget(req.NamespacedName)
		}
		r.memory.forget(req.NamespacedName)
		r.forgetMetrics(req.NamespacedName)
		return r.reconcileDelete(ctx, mc)
	}
	if !mc.IsPaused() {
		if err := r.ensureFinalizer(ctx, mc); err != nil {
			return ctrl.Result{}, err
		}
	}

	obs := status.Observation{Cluster: mc, Migrations: mc.Status.Migrations}
	var err error
	if mc.IsPaused() {
		logger.V(1).Info("paused: observing only")
		obs.StatefulSet, err = r.observeStatefulSet(ctx, mc)
		if err == nil {
			err = r.observeTopology(ctx, mc, &obs)
		}
		// A pause stops changes, not availability: the owners' leases are
		// still renewed. A keeper that pushes the recorded epoch already
		// (the operator ran through the pause) is left as it is; one that
		// keeps nothing (the operator restarted) gets the recorded
		// topology, signed with the key the unpaused path would use, and
		// is told first that the cluster ran, so an owner that came back
		// empty is withheld rather than given ownership.
		if err == nil && r.Leases != nil && obs.Topology != nil && r.Leases.Kept(req.NamespacedName) < obs.Topology.Epoch {
			obs.OperatorKey, err = r.loadOperatorKey(ctx, mc)
			if err == nil && obs.OperatorKey != nil && status.Started(mc) {
				r.Leases.Running(req.NamespacedName)
			}
		}
	} else {
		err = r.reconcileChildren(ctx, mc, &obs)
	}
	// Rules: validated always, pushed only once the children (the
	// ConfigMap a restarting node reads) are in place.
	rulesRequeue := r.reconcileRules(ctx, mc, &obs, err == nil && !mc.IsPaused())
	var (
		op      *operation
		requeue time.Duration
	)
	if err == nil && !mc.IsPaused() {
		op, requeue, err = r.planOperation(ctx, mc, &obs)
	}
	obs.ReconcileError = err

	if statusErr := r.updateStatus(ctx, mc, obs); statusErr != nil {
		if apierrors.IsConflict(statusErr) {
			// Our cache is behind our own last record: read again.
			return ctrl.Result{RequeueAfter: nextStep}, nil
		}
		return ctrl.Result{}, errors.Join(err, statusErr)
	}
	r.observeCluster(mc, &obs)
	// Only a recorded topology is pushed (see reconcileTopology).
	if r.Leases != nil && obs.Topology != nil && obs.OperatorKey != nil {
		r.Leases.SetGuarded(req.NamespacedName, obs.Topology, obs.OperatorKey, mc.Spec.Storage.Mode != meshv1.StorageDisk)
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if op != nil {
		return r.runOperation(ctx, mc, &obs, op)
	}
	return ctrl.Result{RequeueAfter: shorterRequeue(requeue, rulesRequeue)}, nil
}

// reconcileChildren creates or updates every child, in dependency order:
// the configuration before the pods that read it.
func (r *MeshClusterReconciler) reconcileChildren(ctx context.Context, mc *meshv1.MeshCluster, obs *status.Observation) error {
	operatorKey, err := r.reconcileCredentials(ctx, mc)
	if err != nil {
		return err
	}
	obs.OperatorKey = operatorKey
	cm, err := r.reconcileConfigMap(ctx, mc, operatorKey)
	if err != nil {
		return err
	}
	if err := r.reconcileServices(ctx, mc); err != nil {
		return err
	}
	sts, err := r.reconcileStatefulSet(ctx, mc, resources.ConfigHash(cm), obs)
	if err != nil {
		return err
	}
	obs.StatefulSet = sts
	if err := r.reconcilePodDisruptionBudget(ctx, mc); err != nil {
		return err
	}
	return r.reconcileTopology(ctx, mc, obs, true)
}

func (r *MeshClusterReconciler) observeStatefulSet(ctx context.Context, mc *meshv1.MeshCluster) (*appsv1.StatefulSet, error) {
	sts := &appsv1.StatefulSet{}
	err := r.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resources.StatefulSetName(mc)}, sts)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get StatefulSet: %w", err)
	}
	return sts, nil
}

// updateStatus writes the computed status only when it differs from the
// stored one, so a steady cluster makes no API writes.
func (r *MeshClusterReconciler) updateStatus(ctx context.Context, mc *meshv1.MeshCluster, obs status.Observation) error {
	selector, err := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{MatchLabels: resources.SelectorLabels(mc)})
	if err != nil {
		return fmt.Errorf("build selector: %w", err)
	}
	next := status.Compute(obs, selector.String())
	if equality.Semantic.DeepEqual(mc.Status, next) {
		return nil
	}
	// Optimistic locking: a pass that read a stale cache must not
	// overwrite a newer topology record.
	patch := client.MergeFromWithOptions(mc.DeepCopy(), client.MergeFromWithOptimisticLock{})
	mc.Status = next
	if err := r.Status().Patch(ctx, mc, patch); err != nil {
		return fmt.Errorf("update status: %w", err)
	}
	return nil
}

// SetupWithManager registers the reconciler and the children it watches.
func (r *MeshClusterReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&meshv1.MeshCluster{}).
		Owns(&appsv1.StatefulSet{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&corev1.Secret{}).
		// Pods belong to the StatefulSet, not the cluster: map them back by
		// their instance label so readiness and addresses reach status.
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			name := o.GetLabels()[resources.LabelInstance]
			if name == "" || o.GetLabels()[resources.LabelName] != "mesh-node" {
				return nil
			}
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
		})).
		Named("meshcluster").
		Complete(r)
}
