// Package shard keeps the bus's set of shards: their lifecycle, their
// rings, which of them new events may be routed to, and the pure scaling
// policy that decides when to add or drain one.
//
// A shard moves Provisioning → Active → Draining → Stopped and is then
// removed. Only Active shards receive newly routed events.
//
// Invariants (pinned by tests named after them):
//
//   - Activate is idempotent: the active count moves only on the
//     Provisioning → Active transition, never on a repeated call.
//   - Rollback of a failed activation decrements the active count only if
//     that shard had transitioned to Active; a shard that never activated
//     leaves the count alone.
//   - Remove deletes exactly the shard it names; other Stopped shards stay
//     until they are removed themselves. Remove returns the events still in
//     the shard's ring ("stranded" by producers that routed to it before it
//     drained) so the caller can dispatch them instead of losing them.
//   - The shard budget (MaxShards) is checked and the shard inserted under
//     one hold of the manager's write lock, which is what serialises
//     concurrent Adds; the load-then-store is safe because of that lock.
//   - Selection picks among the least-loaded active shards using Lemire's
//     multiply-shift (h*n)>>64 (math/bits.Mul64), which is unbiased for any
//     n, unlike h%n.
//   - Decide (the scaling policy) is a pure function of the policy, the
//     carried State, the metrics and the time: no clocks, no goroutines.
//     Scale-down happens only after a shard has stayed under the
//     underutilised threshold for the whole ScaleDownDelay, and never below
//     MinShards or within Cooldown of the previous scaling action.
//   - Decide scales up only when more than OverloadedFraction of the
//     non-draining shards are overloaded (the mesh operator uses one half;
//     zero, the bus monitor's setting, means any one) and fewer than
//     MaxShards shards exist, draining ones included. Draining shards are
//     never evaluated, never drained twice, and never count towards
//     MinShards. Base shards (not Removable) are never drained.
package shard
