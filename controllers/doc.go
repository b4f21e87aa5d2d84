// Package controllers reconciles MeshClusters: the Kubernetes children
// (StatefulSet, Services, ConfigMap, PDB, credential Secrets), the
// topology and the data-plane operations that change it.
//
// Reconcile is one linear pass: children, topology placement, then at
// most one data-plane step (orchestration.go): a failover
// (reconcile_failover.go), a scale-down step (reconcile_scaling.go), the
// resumption of recorded moves, rebalancing handoffs (up to
// migration.maxConcurrent of distinct shards at once, each bounded by
// migration.timeout with onTimeout Abort or Retry), or dropping the
// followers moves and failovers left once standbys caught up
// (reconcile_rebalance.go), a step of a rolling update
// (reconcile_update.go: an active's shards handed off, its pod deleted,
// its return awaited), or a step of a credential rotation
// (reconcile_rotation.go: trust, switch, drop of the keys on running
// nodes, recorded in the operator-key Secret). The step is announced in
// Progressing by the status update and run after it, through
// node/orchestrate (a rotation calls the nodes' credentials API itself).
//
// Behaviour rules (reconcile_rules.go) run beside that step, not as one:
// every pass validates spec.rules (the RulesValid condition; an invalid
// set leaves the ConfigMap's last valid rules in force) and pushes the
// rules to each ready node whose reported rules hash differs, which
// changes neither the topology nor a pod. The same pass copies the subnet
// each node reports into status.members[].subnet.
//
// Prometheus metrics (metrics.go) count reconciles, moves, failovers and
// blocked scale-downs; every reconcile log line carries cluster and epoch.
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
//   - Crash-safe at every step: failpoints (failpoints.go) after each
//     data-plane call let tests kill the operator there; a fresh one
//     finishes the operation exactly once from status.
//   - A restarted operator's lease keeper asks every memory-mode owner of
//     a cluster that ran for its status before its first push, so an
//     owner that lost its log while no operator ran is never handed
//     ownership again (LeaseKeeper.Running).
//   - The PodDisruptionBudget allows one voluntary eviction at a time
//     with a standby, none without (resources/pdb.go).
//   - Steady state makes no API writes.
package controllers
