// Package controllers reconciles MeshClusters: the Kubernetes children
// (StatefulSet, Services, ConfigMap, PDB, credential Secrets), the
// topology and the data-plane operations that change it.
//
// Reconcile is one linear pass: children (reconcile_children.go), the
// credentials (reconcile_credentials.go: the operator, cluster and data
// key Secrets, the data grant re-signed in place late in its life and the
// nodes' server keys published for clients to pin), topology placement,
// then at most one data-plane step (orchestration.go), the first due in
// this order: a failover, or under ackPolicy Standby a ready active
// follower for shards that have none (reconcile_failover.go); the
// resumption of recorded moves (reconcile_rebalance.go); a step of a
// credential rotation (reconcile_rotation.go: trust, switch and drop of
// the keys on running nodes, a grace period between them, recorded in
// the operator-key Secret); a scale-down step (reconcile_scaling.go); a
// step of a rolling update under the StatefulSet's OnDelete strategy
// (reconcile_update.go, status.update: an active's shards handed off,
// its pod deleted, its return at the new revision awaited, standbys
// first); rebalancing handoffs (up to migration.maxConcurrent of distinct
// shards at once, each bounded by migration.timeout with onTimeout Abort
// or Retry) or dropping the followers moves and failovers left once
// standbys caught up (reconcile_rebalance.go); and last, when nothing
// else moves, shard autoscaling (reconcile_autoscale.go: adding a shard
// for keyless load, marking an idle added shard draining, removing a
// draining shard once its owner reports it draining and empty). The step
// is announced in Progressing by the status update and run after it,
// through node/orchestrate (a rotation calls the nodes' credentials API
// itself).
//
// Behaviour rules (reconcile_rules.go) run beside that step, not as one:
// every pass validates spec.rules (the RulesValid condition and an
// InvalidRules Event; an invalid set leaves the last valid rules in
// force) and pushes the rules to each ready node whose reported rules
// hash differs (Event RulesApplied), which changes neither the topology
// nor a pod. The same pass copies the subnet each node reports into
// status.members[].subnet.
//
// Prometheus metrics (metrics.go) count reconciles, moves, failovers,
// blocked scale-downs and credential rotations and export the recorded
// epoch; every reconcile log line carries cluster and epoch.
//
// Invariants:
//
//   - Record before push: every topology is written to MeshCluster.status
//     (a status patch with optimistic locking) before any node sees it;
//     the LeaseKeeper only pushes recorded topologies and never renews an
//     epoch older than the newest recorded one.
//   - Resumable: every decision is a function of the spec, the recorded
//     topology (with status.migrations, status.update, status.autoscale
//     and the rotation record in the operator-key Secret) and the pods,
//     so a restarted operator continues where the previous one stopped.
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
//   - A rolling update never deletes a pod that owns shards while another
//     active can take them, so it causes no failover; a single active is
//     restarted without a handoff (Warning Event RollingUpdateUnsafe).
//   - A rotation step reaches every pod with an address before the next
//     one, so no node refuses a token signed with a key still in use.
//   - Steady state makes no API writes.
package controllers
