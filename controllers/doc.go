// Package controllers reconciles MeshClusters: the Kubernetes children
// (StatefulSet, Services, ConfigMap, PDB, credential Secrets), the
// topology and the data-plane operations that change it.
//
// Reconcile is one linear pass: children, topology placement, then at
// most one data-plane step (orchestration.go): a failover
// (reconcile_failover.go), a scale-down step (reconcile_scaling.go), the
// resumption of a recorded move, or a rebalancing handoff
// (reconcile_rebalance.go). The step is announced in Progressing by the
// status update and run after it, through node/orchestrate.
//
// Invariants:
//
//   - Record before push: every topology is written to MeshCluster.status
//     (a status patch with optimistic locking) before any node sees it;
//     the LeaseKeeper only pushes recorded topologies and never renews an
//     epoch older than the newest recorded one.
//   - Resumable: every decision is a function of the spec, the recorded
//     topology (with status.migrations) and the pods, so a restarted
//     operator continues where the previous one stopped.
//   - The StatefulSet shrinks only after the leaving members left the
//     recorded topology; a scale-down that cannot be done safely leaves it
//     as it is, with ScaleDownBlocked True and a Warning Event.
//   - A promotion waits out the failed owner's lease, measured from the
//     last push to it that the operator saw answered (a whole lease from
//     now when unknown, after a restart).
//   - Steady state makes no API writes.
package controllers
