// Package group runs several copies of one daemon across nodes: a
// StandbyGroup (active–passive: one member processes, the others hold warm
// snapshots) and a ReplicaGroup (N members share the work through a routing
// strategy).
//
// Members live in compute.Hosts on this node's view of the cluster; the
// node package maps member placement onto real nodes. Groups are not safe
// for concurrent use: the caller (the node's group controller) serializes
// calls, so a group holds no lock of its own while daemon code runs.
//
// Invariants (each pinned by a test):
//
//   - Member identities are derived from the group seed and the member
//     index only (SHA-256), so every node computes the same identities and
//     a re-spawned member keeps its identity.
//   - Placement spreads members over failure domains first and nodes
//     second: a new member goes to the healthy node whose domain holds the
//     fewest members of the group, then the node holding the fewest, then
//     the smallest node id. A member re-placed after a node failure only
//     goes to a healthy node holding no other member of the group.
//   - StandbyGroup: every event delivered to the active after a standby's
//     last sync stays in the replay buffer until every healthy standby has
//     synced past it, so Promote can replay exactly the events the promoted
//     standby is missing. Promote picks the eligible standby with the
//     highest synced seq; the promoted state equals the active's state over
//     all delivered events. A failed Promote changes no roles.
//   - OnNodeRecovery handles every member on the recovered node (it does
//     not stop at the first match): with more members than nodes, several
//     members can share a node.
//   - ReplicaGroup: ScaleTo(0) is rejected; scaling down removes the
//     highest indices; a replica on a failed node is re-spawned on a healthy
//     node with the same index and identity.
//   - Consistent-hash routing moves only the keys of a replica that left the
//     healthy set; key hashes are fixed across processes (FNV-1a finished
//     with splitmix64), so every node routes a key the same way.
package group
