package orchestrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/purplerain/mesh-operator/node/adminapi"
	"github.com/purplerain/mesh-operator/node/topology"
)

// Promote hands the shards of a failed owner to their followers. It waits
// until failed's lease has run out (lastPush is when the last push that
// could have reached failed returned, plus the lease and LeaseMargin), then
// picks for each shard the reachable follower whose log is furthest along
// (highest next seq in its status), records a topology at epoch+1 that
// makes it the owner, promotes it and pushes the topology to every other
// member.
//
// In the new topology failed is a standby: it follows its former shards and
// joins every shard a promoted standby followed, so it catches up when it
// comes back. A promoted standby becomes an active member and keeps
// following the shards it does not own, so their owners keep a follower
// (ackPolicy Standby) while failed is down; the operator may drop it once
// failed has caught up. Calling Promote again with the returned topology only
// re-pushes it.
func (d *Driver) Promote(ctx context.Context, cur *topology.Topology, failed string, lastPush time.Time) (*topology.Topology, error) {
	if _, ok := cur.Member(failed); !ok {
		return cur, fmt.Errorf("%w: %q is not a member", ErrConflict, failed)
	}
	shards := cur.OwnedBy(failed)
	if len(shards) == 0 {
		return cur, d.Push(ctx, cur)
	}
	margin := d.LeaseMargin
	if margin <= 0 {
		margin = cur.Lease() / 20
	}
	if err := sleepUntil(ctx, lastPush.Add(cur.Lease()+margin)); err != nil {
		return cur, fmt.Errorf("promote: waiting out %s's lease: %w", failed, err)
	}
	if err := d.failpoint(ctx, StepLeaseWaited, cur); err != nil {
		return cur, err
	}

	// Read every other member once; an unreachable one is no candidate.
	statuses := map[string]adminapi.Status{}
	for _, m := range cur.Members {
		if m.Name == failed {
			continue
		}
		if st, err := d.status(ctx, cur, m.Name); err == nil && st.Epoch >= cur.Epoch {
			statuses[m.Name] = st
		}
	}
	chosen := map[uint16]string{}
	for _, id := range shards {
		s, _ := cur.Shard(id)
		best, bestNext := "", uint64(0)
		for _, f := range s.Followers {
			st, ok := statuses[f]
			if !ok {
				continue
			}
			next, _, _, _, ok := shardStatus(st, id, "follower")
			if ok && (best == "" || next > bestNext) {
				best, bestNext = f, next
			}
		}
		if best == "" {
			return cur, fmt.Errorf("%w: shard %d of %s (followers %v)", ErrNoCandidate, id, failed, s.Followers)
		}
		chosen[id] = best
		d.logger().Info("promote: candidate", "shard", id, "member", best, "next", bestNext)
	}

	next := cur.Clone()
	next.Epoch++
	promote := map[string][]uint16{}
	promotedStandbys := map[string]bool{}
	for i := range next.Members {
		m := &next.Members[i]
		if m.Name == failed {
			m.Role = topology.Standby
		}
		for _, name := range chosen {
			if m.Name == name && m.Role == topology.Standby {
				m.Role = topology.Active
				promotedStandbys[name] = true
			}
		}
	}
	for i := range next.Shards {
		s := &next.Shards[i]
		if to, ok := chosen[s.ID]; ok {
			s.Owner, s.Fenced = to, false
			promote[to] = append(promote[to], s.ID)
		}
		// failed follows its former shards and every shard a promoted
		// standby followed. The promoted standby keeps following the
		// shards it does not own: under ackPolicy Standby their owners
		// still need a follower while failed is down.
		join := chosen[s.ID] != ""
		s.Followers = slices.DeleteFunc(s.Followers, func(f string) bool {
			if promotedStandbys[f] {
				join = true
			}
			return f == s.Owner
		})
		if join && s.Owner != failed && !slices.Contains(s.Followers, failed) {
			s.Followers = append(s.Followers, failed)
		}
	}
	if err := next.Validate(); err != nil {
		return cur, fmt.Errorf("promote: %w", err)
	}
	if err := d.Record(next); err != nil {
		if errors.Is(err, ErrFailpoint) {
			return next, err
		}
		return cur, fmt.Errorf("promote: %w: %w", errRecord, err)
	}
	if err := d.push(ctx, next, promote, nil); err != nil {
		return next, fmt.Errorf("promote recorded at epoch %d but not pushed (call Promote again): %w", next.Epoch, err)
	}
	return next, d.failpoint(ctx, StepPromotePushed, next)
}

func sleepUntil(ctx context.Context, at time.Time) error {
	d := time.Until(at)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
