package node

import "github.com/purplerain/mesh-operator/node/refusal"

// The node's refusals, defined in package refusal so the data API and
// clients can branch on them without importing the node.
var (
	ErrNoTopology      = refusal.ErrNoTopology
	ErrLeaseExpired    = refusal.ErrLeaseExpired
	ErrShardMoving     = refusal.ErrShardMoving
	ErrBehindRetention = refusal.ErrBehindRetention
	ErrBackpressure    = refusal.ErrBackpressure
)

// NotOwnerError says which node owns a shard this node was asked to write.
type NotOwnerError = refusal.NotOwnerError

// RuleRejectedError says which behaviour rules refused an ingest.
type RuleRejectedError = refusal.RuleRejectedError
