// Package refusal names why a node refuses a request. The node returns
// these errors; the data API maps each to its status code and error code,
// and clients branch on them. It is a leaf package so both sides can
// import it.
package refusal

import (
	"errors"
	"fmt"
)

var (
	// ErrNoTopology: the node has not received a topology yet.
	ErrNoTopology = errors.New("node: no topology received yet")
	// ErrLeaseExpired: the node's lease ran out; it accepts no writes until
	// the operator renews it.
	ErrLeaseExpired = errors.New("node: lease expired, not accepting writes")
	// ErrShardMoving: the shard is changing owner; retry shortly, the new
	// owner will accept it.
	ErrShardMoving = errors.New("node: shard is moving, retry shortly")
	// ErrBehindRetention: a read asked for events retention already
	// removed.
	ErrBehindRetention = errors.New("node: position is behind retention")
	// ErrBackpressure: the node cannot take more events right now.
	ErrBackpressure = errors.New("node: backpressure, retry later")
)

// NotOwnerError says which node owns a shard this node was asked to write.
type NotOwnerError struct {
	Shard uint16
	// Owner is the owner's name and Data its data API address; both empty
	// when the topology names no owner.
	Owner string
	Data  string
}

func (e *NotOwnerError) Error() string {
	if e.Owner == "" {
		return fmt.Sprintf("node: shard %d has no owner in the current topology", e.Shard)
	}
	return fmt.Sprintf("node: shard %d is owned by %s (%s)", e.Shard, e.Owner, e.Data)
}

// RuleRejectedError says which behaviour rules refused an ingest. The
// whole request is refused and nothing of it was appended. Retrying the
// same events is pointless unless RateLimited (then retry after the rule's
// window).
type RuleRejectedError struct {
	// Rule is the first failing rule (the list is sorted).
	Rule string
	// Rules are every failing rule, sorted and de-duplicated.
	Rules []string
	// RateLimited: the request exceeded the rules' rate limits; otherwise
	// an event failed the rules' conditions.
	RateLimited bool
}

func (e *RuleRejectedError) Error() string {
	what := "rejected by rule"
	if e.RateLimited {
		what = "rate limited by rule"
	}
	if len(e.Rules) > 1 {
		return fmt.Sprintf("node: ingest %s %q (failing rules: %q)", what, e.Rule, e.Rules)
	}
	return fmt.Sprintf("node: ingest %s %q", what, e.Rule)
}
