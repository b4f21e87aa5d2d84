package replication

import (
	"errors"
	"fmt"

	"github.com/purplerain/mesh-operator/engine/redex"
)

var (
	// ErrServerClosed is returned by Serve and ServeConn after Close.
	ErrServerClosed = errors.New("replication: server closed")
	// ErrFollowerClosed is the follower's state after Close.
	ErrFollowerClosed = errors.New("replication: follower closed")
)

// Side names who refused.
type Side string

// Sides of a replication stream.
const (
	SideOwner    Side = "owner"
	SideFollower Side = "follower"
)

// StaleEpochError: one side is at an older epoch than the other and was
// refused. With Refuser SideOwner the follower's subscription was older than
// the owner's epoch; with SideFollower the owner's stream was older than the
// follower's epoch. A follower retries with backoff (a topology push usually
// settles it).
type StaleEpochError struct {
	Shard    uint16
	Refuser  Side
	Follower uint64 // the follower's epoch
	Owner    uint64 // the owner's epoch
}

func (e *StaleEpochError) Error() string {
	return fmt.Sprintf("replication: shard %d: %s refused: follower epoch %d, owner epoch %d", e.Shard, e.Refuser, e.Follower, e.Owner)
}

// DeniedError: the owner refused the follower's token (missing, invalid,
// expired, wrong scope or bound to another shard). Nothing is streamed.
type DeniedError struct {
	Shard  uint16
	Reason string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("replication: shard %d: owner denied subscription: %s", e.Shard, e.Reason)
}

// LaggedError: the owner already pruned entries the follower needs (From is
// the follower's next seq, OwnerFirst the owner's oldest retained). The
// follower stops: it never skips entries, unless FollowerOptions.Resync lets
// it start over from the owner's log head (resync.go), which the node does.
// errors.Is(err, redex.ErrLagged) holds.
type LaggedError struct {
	Shard      uint16
	From       uint64
	OwnerFirst uint64
}

func (e *LaggedError) Error() string {
	return fmt.Sprintf("replication: shard %d: follower needs seq %d but owner retains only from %d", e.Shard, e.From, e.OwnerFirst)
}

// Is makes errors.Is(err, redex.ErrLagged) true.
func (e *LaggedError) Is(target error) bool { return target == redex.ErrLagged }

// DivergedError: the follower holds seqs the owner never had (after a
// failover under ackPolicy Leader the old owner's unreplicated suffix). The
// follower stops, unless FollowerOptions.TruncateDiverged lets it cut its
// log back to CutFrom (redex TruncateFrom) and resubscribe.
type DivergedError struct {
	Shard        uint16
	FollowerNext uint64
	// CutFrom is where the follower's log must be cut: the owner's next
	// seq when the follower is beyond it, or the follower's last seq when
	// that entry differs from the owner's.
	CutFrom uint64
}

func (e *DivergedError) Error() string {
	return fmt.Sprintf("replication: shard %d: follower log (next seq %d) diverges from the owner's from seq %d", e.Shard, e.FollowerNext, e.CutFrom)
}

// RefusedError is any other refusal by the owner (unknown shard, entry too
// large, owner unavailable).
type RefusedError struct {
	Shard  uint16
	Code   RefuseCode
	Seq    uint64
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("replication: shard %d: owner refused (%s) at seq %d: %s", e.Shard, e.Code, e.Seq, e.Reason)
}

// refusalError turns an owner's refusal into the follower's typed error.
func refusalError(m refuseMsg, followerEpoch, followerNext uint64) error {
	switch m.Code {
	case RefuseDenied:
		return &DeniedError{Shard: m.Shard, Reason: m.Reason}
	case RefuseStaleEpoch:
		return &StaleEpochError{Shard: m.Shard, Refuser: SideOwner, Follower: followerEpoch, Owner: m.Epoch}
	case RefuseLagged:
		return &LaggedError{Shard: m.Shard, From: followerNext, OwnerFirst: m.Seq}
	case RefuseDiverged:
		return &DivergedError{Shard: m.Shard, FollowerNext: followerNext, CutFrom: m.Seq}
	}
	return &RefusedError{Shard: m.Shard, Code: m.Code, Seq: m.Seq, Reason: m.Reason}
}
