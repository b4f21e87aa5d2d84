package controllers

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/status"
	"github.com/purplerain/mesh-operator/node/topology"
)

// Operator metrics, registered with controller-runtime's registry (so the
// manager's /metrics serves them next to controller_runtime_*). Every
// series but the reconcile count carries the cluster's namespace and name;
// a deleted cluster's series are dropped. The reconciler calls one method per decision:
//
//	mesh_operator_reconciles_total{result}            success | requeue | error
//	mesh_operator_migrations_started_total            a shard move began (counted once per move)
//	mesh_operator_migrations_completed_total          the new owner took the shard
//	mesh_operator_migrations_failed_total             the move failed or timed out
//	mesh_operator_failovers_total                     promotions of a failed owner's followers
//	mesh_operator_failover_duration_seconds           from the owner first seen not ready to the new epoch recorded
//	mesh_operator_scale_down_blocked                  1 while ScaleDownBlocked is True
//	mesh_operator_scale_down_blocked_total            times a scale-down became blocked
//	mesh_operator_epoch                               the recorded topology epoch
//	mesh_operator_credential_rotations_total          rotations finished
var (
	clusterLabels = []string{"namespace", "cluster"}

	reconcilesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_operator_reconciles_total",
		Help: "MeshCluster reconciles by result: success, requeue (a data-plane step ran or the cache was behind: the next pass follows at once) or error.",
	}, []string{"result"})
	migrationsStarted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_operator_migrations_started_total",
		Help: "Shard moves started (each move counted once, however many passes it takes).",
	}, clusterLabels)
	migrationsCompleted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_operator_migrations_completed_total",
		Help: "Shard moves completed: the new owner owns the shard.",
	}, clusterLabels)
	migrationsFailed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_operator_migrations_failed_total",
		Help: "Shard moves that failed or exceeded migration.timeout (the source kept the shard).",
	}, clusterLabels)
	failoversTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_operator_failovers_total",
		Help: "Failovers: the followers of a failed owner's shards promoted at a new epoch.",
	}, clusterLabels)
	failoverSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mesh_operator_failover_duration_seconds",
		Help:    "Time to failover: from the owner first seen not ready (or unreachable) to the promotion recorded; includes standby.failoverAfter and the lease wait.",
		Buckets: []float64{0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300},
	}, clusterLabels)
	scaleDownBlocked = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mesh_operator_scale_down_blocked",
		Help: "1 while a requested scale-down is blocked (condition ScaleDownBlocked True), else 0.",
	}, clusterLabels)
	scaleDownBlockedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_operator_scale_down_blocked_total",
		Help: "Times a requested scale-down became blocked.",
	}, clusterLabels)
	epochGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mesh_operator_epoch",
		Help: "The cluster's recorded topology epoch.",
	}, clusterLabels)
	rotationsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_operator_credential_rotations_total",
		Help: "Credential rotations finished (mesh.purplerain.io/rotate-credentials).",
	}, clusterLabels)

	perCluster = []interface{ DeletePartialMatch(prometheus.Labels) int }{
		migrationsStarted, migrationsCompleted, migrationsFailed, failoversTotal,
		failoverSeconds, scaleDownBlocked, scaleDownBlockedTotal, epochGauge, rotationsTotal,
	}
)

func init() {
	metrics.Registry.MustRegister(reconcilesTotal, migrationsStarted, migrationsCompleted, migrationsFailed,
		failoversTotal, failoverSeconds, scaleDownBlocked, scaleDownBlockedTotal, epochGauge, rotationsTotal)
}

// clusterMetrics is what the metrics remember per cluster: the moves
// counted as started (so a move spanning passes counts once) and whether
// a scale-down was blocked at the last look.
type clusterMetrics struct {
	mu      sync.Mutex
	moving  map[types.NamespacedName]map[string]bool
	blocked map[types.NamespacedName]bool
}

func labelsOf(nn types.NamespacedName) prometheus.Labels {
	return prometheus.Labels{"namespace": nn.Namespace, "cluster": nn.Name}
}

func moveKey(m topology.Move) string { return fmt.Sprintf("%d/%s/%s", m.Shard, m.From, m.To) }

// observeReconcile counts one Reconcile by its outcome.
func (r *MeshClusterReconciler) observeReconcile(res ctrl.Result, err error) {
	result := "success"
	switch {
	case err != nil:
		result = "error"
	case res.RequeueAfter > 0 && res.RequeueAfter <= nextStep:
		// A step ran or is due right away, or the cache was behind.
		result = "requeue"
	}
	reconcilesTotal.WithLabelValues(result).Inc()
}

// observeCluster records what a pass saw: the epoch and whether a
// scale-down is blocked.
func (r *MeshClusterReconciler) observeCluster(mc *meshv1.MeshCluster, obs *status.Observation) {
	nn := types.NamespacedName{Namespace: mc.Namespace, Name: mc.Name}
	l := labelsOf(nn)
	if obs.Topology != nil {
		epochGauge.With(l).Set(float64(obs.Topology.Epoch))
	}
	blocked := obs.ScaleDownBlocked != ""
	r.metrics.mu.Lock()
	if r.metrics.blocked == nil {
		r.metrics.blocked = map[types.NamespacedName]bool{}
	}
	was := r.metrics.blocked[nn]
	r.metrics.blocked[nn] = blocked
	r.metrics.mu.Unlock()
	v := 0.0
	if blocked {
		v = 1
		if !was {
			scaleDownBlockedTotal.With(l).Inc()
		}
	}
	scaleDownBlocked.With(l).Set(v)
}

// observeMoveStarted counts move as started, once.
func (r *MeshClusterReconciler) observeMoveStarted(mc *meshv1.MeshCluster, m topology.Move) {
	nn := types.NamespacedName{Namespace: mc.Namespace, Name: mc.Name}
	r.metrics.mu.Lock()
	if r.metrics.moving == nil {
		r.metrics.moving = map[types.NamespacedName]map[string]bool{}
	}
	if r.metrics.moving[nn] == nil {
		r.metrics.moving[nn] = map[string]bool{}
	}
	counted := r.metrics.moving[nn][moveKey(m)]
	r.metrics.moving[nn][moveKey(m)] = true
	r.metrics.mu.Unlock()
	if !counted {
		migrationsStarted.With(labelsOf(nn)).Inc()
	}
}

// observeMoveDone counts move as completed or failed; the next attempt
// of the same move counts as started again.
func (r *MeshClusterReconciler) observeMoveDone(mc *meshv1.MeshCluster, m topology.Move, completed bool) {
	nn := types.NamespacedName{Namespace: mc.Namespace, Name: mc.Name}
	r.metrics.mu.Lock()
	delete(r.metrics.moving[nn], moveKey(m))
	r.metrics.mu.Unlock()
	if completed {
		migrationsCompleted.With(labelsOf(nn)).Inc()
	} else {
		migrationsFailed.With(labelsOf(nn)).Inc()
	}
}

// observeFailover counts a failover of failed and the time since it was
// first seen not ready (the pass that decided it, after an operator
// restart). Call it before the memory forgets failed.
func (r *MeshClusterReconciler) observeFailover(mc *meshv1.MeshCluster, failed string) {
	nn := types.NamespacedName{Namespace: mc.Namespace, Name: mc.Name}
	var since time.Time
	r.memory.with(nn, func(cm *clusterMemory) { since = cm.notReadySince[failed] })
	failoversTotal.With(labelsOf(nn)).Inc()
	if !since.IsZero() {
		failoverSeconds.With(labelsOf(nn)).Observe(time.Since(since).Seconds())
	}
}

// observeRotation counts a finished credential rotation.
func (r *MeshClusterReconciler) observeRotation(mc *meshv1.MeshCluster) {
	rotationsTotal.With(labelsOf(types.NamespacedName{Namespace: mc.Namespace, Name: mc.Name})).Inc()
}

// forgetMetrics drops a deleted cluster's series.
func (r *MeshClusterReconciler) forgetMetrics(nn types.NamespacedName) {
	for _, v := range perCluster {
		v.DeletePartialMatch(labelsOf(nn))
	}
	r.metrics.mu.Lock()
	delete(r.metrics.moving, nn)
	delete(r.metrics.blocked, nn)
	r.metrics.mu.Unlock()
}
