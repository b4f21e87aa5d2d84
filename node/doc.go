// Package node is the mesh node runtime: the process each MeshCluster pod
// runs (cmd/mesh-node). It holds the topology the operator pushed, decides
// which shards this node may write, and (in its subpackages) serves the
// admin API the operator drives and the data API applications use.
//
// Invariants (pinned by tests):
//
//   - A node never goes back in epochs: a topology older than the one held
//     is refused with topology.ErrStaleEpoch and changes nothing.
//   - An owner accepts writes for a shard only while its lease is valid:
//     the lease starts when a topology (or a renewal at the same epoch) is
//     applied and lasts the topology's lease duration, measured on this
//     node's own monotonic clock. After it expires every write is refused
//     with ErrLeaseExpired until the operator pushes again. The operator waits
//     a lease out before promoting another owner, so two owners never accept
//     writes for one shard.
//   - A write for a shard this node does not own is refused with a
//     *NotOwnerError naming the owner's data address; the node does not
//     forward (clients retry at the owner).
//   - Every daemon the configuration declares runs once per local shard it
//     selects (all base shards when its list is empty), owned or followed,
//     as a compute.Host fed from the shard's local log (shardfeed) from seq
//     0 on, or in Disk mode from its newest stored periodic snapshot when
//     that matches the declaration and lies inside the log (a snapshot is
//     written only after the log is synced, so it never covers entries a
//     crash took back; on a followed shard it may lie past the log's end,
//     as a resync stores the owner's snapshot before the entries below it
//     arrive, and the host waits for them). A follower's hosts are warm
//     copies fed from the replicated log; when the node gains ownership
//     they keep running (only their role changes), and they stop when the
//     node neither owns nor follows the shard. An unknown kind or a config its factory
//     refuses fails New, naming daemons[i].
//   - A follower the owner's retention left behind (it was down or too
//     slow) is resynced, not stopped: its log restarts at the owner's
//     first retained seq and then holds exactly the owner's entries, and
//     its warm daemon copies are restored from the owner's snapshots
//     taken at that moment (replication's resync), so they equal a fold
//     of the shard's whole history although the log no longer holds it.
//     In Disk mode the owner's snapshots are stored before the log is
//     reset, so a crash in between restarts the copies from them. A
//     follower whose log diverged from the owner's (an old owner's writes
//     the new owner never got, under ackPolicy Leader) is resynced the
//     same way (replication/divergence.go): it drops its log, and the
//     owner's snapshots replace its daemon copies and stored snapshots. Only an
//     owner whose wire handshake a trusted cluster key signs is followed:
//     the node's own cluster key, and whatever TrustOwnersSignedBy returns
//     (the runtime trusts its replication keys, so a rotation's).
//   - Disk mode: New opens every stored shard log, and a corrupt one (not
//     merely a torn write) stops the node unless the configuration asks
//     for storage.repairCorruptLogs (redex.Repair, logged loudly).
//   - A keyed event goes to its base shard (topology.KeyShard over the
//     base shards), so shards added by autoscaling never take keys; a
//     keyless event goes to the owned writable shard whose ring holds the
//     fewest events. A draining shard (an added shard the autoscaler
//     retires) leaves the node bus at the epoch that marks it, so it takes
//     no new event, while the node keeps owning it, serving polls of it
//     and replicating its log. The owner reports it draining
//     (ShardStatus.Draining) only once its bus released the shard, so
//     that report with an empty log (First == Next) is all the operator
//     needs to remove it. Every owned shard's load over the last second
//     (ShardStatus.Load: ring fill ratio, event rate, push and flush
//     latency) is what the autoscaler decides on.
//   - Behaviour rules are checked after routing and before any append: a
//     request with an event that fails them is refused whole
//     (refusal.RuleRejectedError) and leaves nothing behind, and a request
//     this node would refuse anyway spends no rate budget. SetRules (the
//     operator's push over the admin API) replaces the set at once,
//     without a restart; rules whose specification did not change keep
//     their rate windows.
//   - A credential rotation changes the keys of the running node
//     (adminapi/credentials.go): the new keys are trusted next to the old
//     ones, then SetClusterKey makes the new cluster key the one
//     replication tokens and wire handshakes are signed with (the previous
//     one stays in ClusterKeys), then only the new keys are trusted; what
//     a dropped key verified before stops working at once.
//   - Drain (the operator's call in a scale-down, and node/runtime on
//     SIGTERM, which then waits, bounded, for a follower to hold every
//     owned shard's last event) refuses every write as moving and flushes
//     what was accepted. A scale-down or a rolling update moves the
//     node's shards away before that (except a single active's), so the
//     node owns nothing when it stops.
//
// The node bus (dataplane.go) holds exactly the shards this node owns as
// engine bus shards over RedEX logs; followers (followers.go) replicate the
// shards it follows; daemons (daemons.go) run on both, so a follower keeps
// warm copies. The admin, data and wire APIs live in subpackages and
// node/runtime runs it all as a process.
package node
