package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/resources"
	"github.com/purplerain/mesh-operator/controllers/status"
	"github.com/purplerain/mesh-operator/node/adminclient"
	"github.com/purplerain/mesh-operator/node/orchestrate"
	"github.com/purplerain/mesh-operator/node/topology"
)

// Data-plane operations. A reconcile pass decides at most one step (one
// membership or ownership change, as etcd-operator does), announces it in
// Progressing with the status update, and only then runs it through
// orchestrate.Driver. The Driver records every topology in status (a
// status patch with optimistic locking) before any node sees it, so a
// restarted operator resumes from status alone: every decision below is a
// function of the spec, the recorded topology and the pods.

// Failpoints after each data-plane call (failpoints.go) let tests restart
// the operator at every step. Shard moves (several at once, bounded by
// migration.timeout) and the dropping of extra followers live in
// reconcile_rebalance.go.

// operation is one data-plane step decided by a pass.
type operation struct {
	reason, message string
	// scaleDown: a failure blocks the scale-down (ScaleDownBlocked).
	scaleDown bool
	// move is the shard move the step runs, recorded in status.migrations
	// before it starts; moves are all of them (move is the first) when
	// the step runs several handoffs at once.
	move  *topology.Move
	moves []topology.Move
	run   func(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error
}

// clusterMemory is what the reconciler remembers of a cluster between
// passes. Losing it (operator restart) only delays decisions: a failover
// waits failoverAfter again, a blocked scale-down is retried at once.
type clusterMemory struct {
	notReadySince map[string]time.Time
	blocked       string
	retryAt       time.Time
	// autoscale is the shard autoscaler's metric windows
	// (reconcile_autoscale.go).
	autoscale *autoscaleMemory
	// rules is what each member last reported of its rules and subnet
	// (reconcile_rules.go).
	rules map[string]rulesSighting
}

const (
	// operationTimeout bounds one step run inside Reconcile.
	operationTimeout = 60 * time.Second
	// retryBlocked is how long a failed step waits before it is tried
	// again.
	retryBlocked = 5 * time.Second
	// nextStep is the requeue after a step that succeeded.
	nextStep = 50 * time.Millisecond
)

type memories struct {
	mu sync.Mutex
	m  map[types.NamespacedName]*clusterMemory
}

// with runs f on the cluster's memory under the lock.
func (ms *memories) with(name types.NamespacedName, f func(*clusterMemory)) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.m == nil {
		ms.m = map[types.NamespacedName]*clusterMemory{}
	}
	cm := ms.m[name]
	if cm == nil {
		cm = &clusterMemory{notReadySince: map[string]time.Time{}}
		ms.m[name] = cm
	}
	f(cm)
}

func (ms *memories) forget(name types.NamespacedName) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	delete(ms.m, name)
}

// planOperation decides this pass's data-plane step, in priority order:
// failover, scale-down (and role changes), rolling update
// (reconcile_update.go), rebalancing. It fills
// obs.Operation, obs.Leaving and obs.ScaleDownBlocked and returns the
// step (nil: none) and when to look again.
func (r *MeshClusterReconciler) planOperation(ctx context.Context, mc *meshv1.MeshCluster, obs *status.Observation) (*operation, time.Duration, error) {
	t := obs.Topology
	if t == nil || obs.OperatorKey == nil {
		return nil, 0, nil
	}
	if r.Leases != nil && status.Started(mc) {
		r.Leases.Running(client.ObjectKeyFromObject(mc))
	}
	podList := &corev1.PodList{}
	if err := r.List(ctx, podList, client.InNamespace(mc.Namespace), client.MatchingLabels(resources.SelectorLabels(mc))); err != nil {
		return nil, 0, fmt.Errorf("list pods: %w", err)
	}
	pods := podInfos(mc, podList.Items)
	if int64(t.Epoch) != mc.Status.Epoch {
		// The topology changed in this pass (a pod joined or moved): one
		// change per pass; the next pass looks again.
		return nil, nextStep, nil
	}
	nn := client.ObjectKeyFromObject(mc)
	var (
		blocked string
		retryAt time.Time
	)
	r.memory.with(nn, func(cm *clusterMemory) { blocked, retryAt = cm.blocked, cm.retryAt })
	// Every move recorded keeps its recorded start (migration.timeout).
	defer func() { obs.Migrations = stampMigrations(mc, obs.Migrations) }()

	op, requeue := r.planFailover(mc, t, obs)
	if op != nil {
		return op, 0, nil
	}
	if op := r.planResume(mc, t, obs); op != nil {
		if wait := time.Until(retryAt); wait > 0 && len(op.moves) > 0 {
			// A move that failed is resumed after the same pause as any
			// failed step (a fenced one was rolled back by the failure).
			return nil, wait, nil
		}
		return op, 0, nil
	}
	rotate, rotateWait, err := r.planRotation(ctx, mc, pods, obs)
	if rotate != nil || err != nil {
		return rotate, 0, err
	}
	if rotateWait > 0 {
		requeue = requeueMin(requeue, rotateWait)
	}
	scale, pending, err := r.planScaling(ctx, mc, t, pods, obs)
	if err != nil {
		return nil, 0, err
	}
	if !pending {
		r.memory.with(nn, func(cm *clusterMemory) { cm.blocked = "" })
	} else if blocked != "" {
		obs.ScaleDownBlocked = blocked
	}
	if scale != nil {
		if len(scale.moves) > 0 {
			obs.Migrations = withMoves(obs.Migrations, scale.moves)
		}
		if wait := time.Until(retryAt); wait > 0 {
			return nil, wait, nil
		}
		return scale, 0, nil
	}
	if pending {
		return nil, requeueMin(requeue, retryBlocked), nil
	}
	update, hold, wait, err := r.planUpdate(ctx, mc, t, obs)
	if err != nil {
		return nil, 0, err
	}
	if update != nil {
		if wait := time.Until(retryAt); wait > 0 {
			return nil, wait, nil
		}
		return update, 0, nil
	}
	if wait > 0 {
		requeue = requeueMin(requeue, wait)
	}
	if hold {
		return nil, requeue, nil
	}
	if op := r.planRebalance(mc, t, obs.PodReady); op != nil {
		obs.Operation = &status.Operation{Reason: op.reason, Message: op.message}
		obs.Migrations = withMoves(obs.Migrations, op.moves)
		if wait := time.Until(retryAt); wait > 0 {
			return nil, wait, nil
		}
		return op, 0, nil
	}
	if op := r.planTidy(mc, t, obs); op != nil {
		if wait := time.Until(retryAt); wait > 0 {
			return nil, wait, nil
		}
		return op, 0, nil
	}
	// Last, when nothing else moves: shard autoscaling.
	if op, wait := r.planAutoscale(ctx, mc, t, obs); op != nil {
		return op, 0, nil
	} else if wait > 0 {
		requeue = requeueMin(requeue, wait)
	}
	return nil, requeue, nil
}

func requeueMin(a, b time.Duration) time.Duration {
	if a <= 0 {
		return b
	}
	return min(a, b)
}

// runOperation runs op after the status update recorded this pass.
func (r *MeshClusterReconciler) runOperation(ctx context.Context, mc *meshv1.MeshCluster, obs *status.Observation, op *operation) (ctrl.Result, error) {
	nn := client.ObjectKeyFromObject(mc)
	logger := log.FromContext(ctx).WithValues("operation", op.reason) // cluster and epoch: Reconcile
	ctx, cancel := context.WithTimeout(ctx, operationTimeout)
	defer cancel()
	d := r.driver(ctx, mc, obs, logger)
	start := time.Now()
	err := op.run(ctx, d, obs.Topology)
	if errors.Is(err, orchestrate.ErrFailpoint) {
		// A test "crashed" the operator here: nothing more happens.
		logger.Info("stopped at a failpoint", "err", err.Error())
		return ctrl.Result{}, nil
	}
	if errors.Is(err, errStillMoving) {
		// Not done, not failed: look again soon (a new owner catching
		// up resumes at once; standbys catching up are polled).
		requeue := nextStep
		if len(op.moves) == 0 {
			requeue = time.Second
		}
		return ctrl.Result{RequeueAfter: requeue}, nil
	}
	if err == nil {
		logger.Info("step done", "step", op.message, "took", time.Since(start).Round(time.Millisecond).String())
		if op.scaleDown {
			r.memory.with(nn, func(cm *clusterMemory) { cm.blocked = "" })
		}
		return ctrl.Result{RequeueAfter: nextStep}, nil
	}
	if apierrors.IsConflict(err) {
		// The cache was behind our own record: read again.
		return ctrl.Result{RequeueAfter: nextStep}, nil
	}
	logger.Info("step failed", "step", op.message, "err", err.Error())
	reason := fmt.Sprintf("%s: %v", op.message, err)
	var report bool
	r.memory.with(nn, func(cm *clusterMemory) {
		cm.retryAt = time.Now().Add(retryBlocked)
		if op.scaleDown {
			report = cm.blocked != reason
			cm.blocked = reason
		}
	})
	switch {
	case op.scaleDown && report:
		r.Recorder.Eventf(mc, nil, corev1.EventTypeWarning, "ScaleDownBlocked", "Scale", "scale-down not done, the StatefulSet keeps its pods: %s", reason)
	case !op.scaleDown:
		r.Recorder.Eventf(mc, nil, corev1.EventTypeWarning, op.reason+"Failed", op.reason, "%s", reason)
	}
	// Requeue at once so the next pass records why in status.
	return ctrl.Result{RequeueAfter: nextStep}, nil
}

// driver builds the orchestration driver of one pass: it signs with the
// cluster's operator key and records every topology into mc's status.
func (r *MeshClusterReconciler) driver(ctx context.Context, mc *meshv1.MeshCluster, obs *status.Observation, logger logr.Logger) *orchestrate.Driver {
	nn := client.ObjectKeyFromObject(mc)
	dial := adminclient.NewHTTPDialer(obs.OperatorKey, nil)
	// Each wait is bounded by min(migration.timeout, 20s) so a step fits
	// in one Reconcile; shard moves bound it by their own deadline
	// (runMoves) and continue a catch-up in the next pass.
	timeout := min(mc.Spec.Migration.Timeout.Duration, 20*time.Second)
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	// Members by admin address, read once: concurrent handoffs record
	// (write mc) while others push (a step changes no member's address).
	byAdmin := map[string]string{}
	if t := topologyFromStatus(mc); t != nil {
		for _, m := range t.Members {
			byAdmin[m.Admin] = m.Name
		}
	}
	return &orchestrate.Driver{
		Dial: func(addr string) adminclient.Client {
			return &notingClient{Client: dial(addr), note: func() {
				if r.Leases == nil {
					return
				}
				if name, ok := byAdmin[addr]; ok {
					r.Leases.NotePush(nn, name, time.Now())
				}
			}}
		},
		Record:           func(t *topology.Topology) error { return r.recordTopology(ctx, mc, obs, t) },
		StepTimeout:      timeout,
		ResumableCatchUp: true,
		Failpoint:        driverFailpoint(nn),
		Logger:           slog.New(logr.ToSlogHandler(logger)),
	}
}

// recordTopology persists t into mc's status (optimistic locking: a pass
// that read a stale cache fails here instead of overwriting a newer
// record), then hands it to the lease keeper.
func (r *MeshClusterReconciler) recordTopology(ctx context.Context, mc *meshv1.MeshCluster, obs *status.Observation, t *topology.Topology) error {
	patch := client.MergeFromWithOptions(mc.DeepCopy(), client.MergeFromWithOptimisticLock{})
	o := *obs
	o.Topology = t
	o.Cluster = mc
	status.RecordTopology(&mc.Status, o)
	if err := r.Status().Patch(ctx, mc, patch); err != nil {
		return fmt.Errorf("record topology epoch %d: %w", t.Epoch, err)
	}
	// Crash point: recorded, not yet known to the lease keeper.
	if err := failpoint(ctx, client.ObjectKeyFromObject(mc), StepRecorded, t.Epoch); err != nil {
		return err
	}
	obs.Topology = t
	if r.Leases != nil {
		r.Leases.SetGuarded(client.ObjectKeyFromObject(mc), t, obs.OperatorKey, mc.Spec.Storage.Mode != meshv1.StorageDisk)
	}
	return nil
}

// notingClient reports every answered topology push, so a promotion
// waits out the lease from the last push any part of the operator made.
type notingClient struct {
	adminclient.Client
	note func()
}

func (c *notingClient) PutTopology(ctx context.Context, t *topology.Topology) error {
	err := c.Client.PutTopology(ctx, t)
	if err == nil {
		c.note()
	}
	return err
}

func (c *notingClient) Promote(ctx context.Context, t *topology.Topology, shards []uint16) error {
	err := c.Client.Promote(ctx, t, shards)
	if err == nil {
		c.note()
	}
	return err
}

// recordAndPush records t (one topology change of a scale-down) and pushes
// it to every member.
func recordAndPush(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if err := d.Record(t); err != nil {
		return err
	}
	if err := d.Push(ctx, t); err != nil {
		return err
	}
	if d.Failpoint != nil {
		return d.Failpoint(ctx, StepPushed, t)
	}
	return nil
}
