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

// Handoff moves move.Shard from move.From to move.To in three epochs, each
// recorded before it is pushed:
//
//  1. To follows the shard; wait until its follower has caught up.
//  2. The shard is fenced: From refuses writes for it as "moving"; wait
//     until From's next seq has stopped moving and To's equals it.
//  3. To owns the shard, From follows it, the fence is cleared
//     (topology.WithMove).
//
// cur is the recorded topology; Handoff resumes from whatever step it
// shows (a fenced shard continues at 2, a shard owned by To is done) and
// returns the last topology it recorded. Before step 3 is recorded any
// failure aborts: a topology at a new epoch leaving From the unfenced owner
// is recorded and pushed, and the error wraps ErrAborted. A failure to push
// the recorded step 3 is returned as is: the handoff is decided, and calling
// Handoff again with the returned topology finishes the push.
func (d *Driver) Handoff(ctx context.Context, cur *topology.Topology, move topology.Move) (*topology.Topology, error) {
	s, ok := cur.Shard(move.Shard)
	if !ok {
		return cur, fmt.Errorf("%w: shard %d does not exist", ErrConflict, move.Shard)
	}
	if move.From == move.To {
		return cur, fmt.Errorf("%w: shard %d moves to its own owner", ErrConflict, move.Shard)
	}
	if m, ok := cur.Member(move.To); !ok || m.Role != topology.Active {
		return cur, fmt.Errorf("%w: %q is not an active member", ErrConflict, move.To)
	}
	if s.Owner == move.To && !s.Fenced {
		// Done before; make sure every node holds the cutover.
		return cur, d.Push(ctx, cur, move.To)
	}
	if s.Owner != move.From {
		return cur, fmt.Errorf("%w: shard %d is owned by %q, not %q", ErrConflict, move.Shard, s.Owner, move.From)
	}
	log := d.logger().With("shard", move.Shard, "from", move.From, "to", move.To)
	t := cur

	// Step 1: To follows (and a fence left by a handoff to someone else is
	// lifted).
	if !s.Fenced || !slices.Contains(s.Followers, move.To) {
		if s.Fenced || !slices.Contains(s.Followers, move.To) {
			next := withShard(t, move.Shard, func(sh *topology.Shard) {
				sh.Fenced = false
				if !slices.Contains(sh.Followers, move.To) {
					sh.Followers = append(sh.Followers, move.To)
				}
			})
			if err := d.Record(next); err != nil {
				return t, fmt.Errorf("%w: record follow step: %w", ErrAborted, err)
			}
			t = next
			log.Info("handoff: new owner follows", "epoch", t.Epoch)
		}
		if err := d.Push(ctx, t, move.From, move.To); err != nil {
			return d.abort(ctx, t, move, err)
		}
		if err := d.waitCaughtUp(ctx, t, move); err != nil {
			return d.abort(ctx, t, move, err)
		}
		// Step 2: fence.
		next := withShard(t, move.Shard, func(sh *topology.Shard) { sh.Fenced = true })
		if err := d.Record(next); err != nil {
			return d.abort(ctx, t, move, fmt.Errorf("record fence step: %w", err))
		}
		t = next
		log.Info("handoff: fenced", "epoch", t.Epoch)
	}
	if err := d.Push(ctx, t, move.From, move.To); err != nil {
		return d.abort(ctx, t, move, err)
	}
	if err := d.waitFenced(ctx, t, move); err != nil {
		return d.abort(ctx, t, move, err)
	}

	// Step 3: cutover. The shard's daemons need no transfer: To has run
	// warm copies of them since it followed the shard, and waitFenced saw
	// them fold the fenced log to its end (see the package doc).
	next, err := topology.WithMove(t, move)
	if err != nil {
		return d.abort(ctx, t, move, err)
	}
	for i := range next.Shards {
		if next.Shards[i].ID == move.Shard {
			next.Shards[i].Fenced = false
		}
	}
	if err := d.Record(next); err != nil {
		return d.abort(ctx, t, move, fmt.Errorf("record cutover: %w", err))
	}
	log.Info("handoff: cut over", "epoch", next.Epoch)
	if err := d.Push(ctx, next, move.To); err != nil {
		return next, fmt.Errorf("handoff of shard %d cut over at epoch %d but not pushed (call Handoff again): %w", move.Shard, next.Epoch, err)
	}
	return next, nil
}

// abort records and pushes a topology at a new epoch in which move.From
// owns the shard unfenced, and returns it with an error wrapping ErrAborted
// and cause. It runs even when ctx has ended.
func (d *Driver) abort(ctx context.Context, t *topology.Topology, move topology.Move, cause error) (*topology.Topology, error) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.stepTimeout())
	defer cancel()
	next := withShard(t, move.Shard, func(sh *topology.Shard) {
		sh.Owner = move.From
		sh.Fenced = false
		sh.Followers = slices.DeleteFunc(sh.Followers, func(f string) bool { return f == move.From })
	})
	d.logger().Warn("handoff: aborting", "shard", move.Shard, "from", move.From, "to", move.To, "epoch", next.Epoch, "cause", cause)
	if err := d.recordAndPush(actx, next, move.From); err != nil {
		// The abort's own record or push failed: the caller resumes from
		// whichever topology was recorded last.
		if errors.Is(err, errRecord) {
			return t, fmt.Errorf("%w: %w; rollback not recorded: %w", ErrAborted, cause, err)
		}
		return next, fmt.Errorf("%w: %w; rollback recorded but not pushed: %w", ErrAborted, cause, err)
	}
	return next, fmt.Errorf("%w: shard %d stays with %s: %w", ErrAborted, move.Shard, move.From, cause)
}

// waitCaughtUp waits until To's follower of the shard has what From had
// when the wait looked: To's next seq at least From's, read before it.
func (d *Driver) waitCaughtUp(ctx context.Context, t *topology.Topology, move topology.Move) error {
	return d.waitFor(ctx, fmt.Sprintf("%s catching up on shard %d", move.To, move.Shard), func(ctx context.Context) (bool, error) {
		from, err := d.status(ctx, t, move.From)
		if err != nil {
			return false, err
		}
		ownerNext, _, _, _, ok := shardStatus(from, move.Shard, "owner")
		if !ok || from.Epoch < t.Epoch {
			return false, fmt.Errorf("%s does not own shard %d at epoch %d yet", move.From, move.Shard, t.Epoch)
		}
		to, err := d.status(ctx, t, move.To)
		if err != nil {
			return false, err
		}
		next, lag, connected, _, ok := shardStatus(to, move.Shard, "follower")
		if !ok || to.Epoch < t.Epoch {
			return false, fmt.Errorf("%s does not follow shard %d at epoch %d yet", move.To, move.Shard, t.Epoch)
		}
		return next >= ownerNext || (connected && lag == 0 && next > 0), nil
	})
}

// waitFenced waits until the fenced owner's next seq stayed the same for
// Settle and the new owner's next seq equals it.
func (d *Driver) waitFenced(ctx context.Context, t *topology.Topology, move topology.Move) error {
	var (
		seen  uint64
		since time.Time
	)
	return d.waitFor(ctx, fmt.Sprintf("%s catching up on fenced shard %d", move.To, move.Shard), func(ctx context.Context) (bool, error) {
		from, err := d.status(ctx, t, move.From)
		if err != nil {
			return false, err
		}
		ownerNext, _, _, fenced, ok := shardStatus(from, move.Shard, "owner")
		if !ok || !fenced || from.Epoch < t.Epoch {
			return false, fmt.Errorf("%s has not fenced shard %d at epoch %d yet", move.From, move.Shard, t.Epoch)
		}
		now := time.Now()
		if since.IsZero() || ownerNext != seen {
			seen, since = ownerNext, now
			return false, nil
		}
		if now.Sub(since) < d.settle() {
			return false, nil
		}
		to, err := d.status(ctx, t, move.To)
		if err != nil {
			return false, err
		}
		next, _, _, _, ok := shardStatus(to, move.Shard, "follower")
		if !ok {
			return false, fmt.Errorf("%s does not follow shard %d", move.To, move.Shard)
		}
		if next > ownerNext {
			return false, fmt.Errorf("%s is ahead of the fenced owner on shard %d (%d > %d)", move.To, move.Shard, next, ownerNext)
		}
		// The new owner's warm daemon copies must have folded the whole
		// log too, so the cutover hands over state equal to the fenced
		// owner's (the Replay phase of a migration; see the package doc).
		return next == ownerNext && daemonsCaughtUp(to, move.Shard, ownerNext), nil
	})
}

// withShard returns a copy of t at epoch+1 with shard id changed by f.
func withShard(t *topology.Topology, id uint16, f func(*topology.Shard)) *topology.Topology {
	next := t.Clone()
	next.Epoch++
	for i := range next.Shards {
		if next.Shards[i].ID == id {
			f(&next.Shards[i])
		}
	}
	return next
}

// daemonsCaughtUp reports whether the daemons st's node hosts on shard id
// (as a follower) have folded the log up to next: true when it hosts none.
func daemonsCaughtUp(st adminapi.Status, id uint16, next uint64) bool {
	for _, s := range st.Shards {
		if s.ID == id && s.Role == "follower" {
			return s.Daemons == 0 || s.DaemonNext >= next
		}
	}
	return false
}
