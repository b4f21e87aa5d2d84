package orchestrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
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
// is recorded and pushed, and the error wraps ErrAborted (with
// ResumableCatchUp, a catch-up wait that ran out of StepTimeout returns
// ErrCatchingUp instead). A failure to push the recorded step 3 is
// returned as is: the handoff is decided, and calling Handoff again with
// the returned topology finishes the push. A failpoint (ErrFailpoint)
// stops it where it is, rolling nothing back.
func (d *Driver) Handoff(ctx context.Context, cur *topology.Topology, move topology.Move) (*topology.Topology, error) {
	l := &ledger{t: cur}
	err := d.handoff(ctx, l, move)
	return l.current(), err
}

// Handoffs runs the handoffs of moves, which must name distinct shards, at
// once. Each step of each handoff is applied to the latest recorded
// topology at the next epoch (one record at a time), so their records
// compose into one history and resuming from it resumes every handoff. It
// returns the last recorded topology and, per move, the error Handoff
// would have returned (nil: done).
func (d *Driver) Handoffs(ctx context.Context, cur *topology.Topology, moves []topology.Move) (*topology.Topology, []error) {
	errs := make([]error, len(moves))
	seen := map[uint16]bool{}
	l := &ledger{t: cur}
	var wg sync.WaitGroup
	for i, m := range moves {
		if seen[m.Shard] {
			errs[i] = fmt.Errorf("%w: shard %d is moved twice at once", ErrConflict, m.Shard)
			continue
		}
		seen[m.Shard] = true
		wg.Go(func() { errs[i] = d.handoff(ctx, l, m) })
	}
	wg.Wait()
	return l.current(), errs
}

// ledger is the recorded topology the handoffs of one call share.
type ledger struct {
	mu sync.Mutex
	t  *topology.Topology
}

func (l *ledger) current() *topology.Topology {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.t
}

// apply records the latest topology with shard id changed by f, at the
// next epoch, and makes it the latest.
func (d *Driver) apply(l *ledger, id uint16, f func(*topology.Shard)) (*topology.Topology, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := withShard(l.t, id, f)
	if err := next.Validate(); err != nil {
		return nil, err
	}
	if err := d.Record(next); err != nil {
		return nil, err
	}
	l.t = next
	return next, nil
}

// pushLatest pushes the latest recorded topology; when a concurrent
// handoff recorded a newer one meanwhile (a node may then refuse ours as
// stale), it pushes that one.
func (d *Driver) pushLatest(ctx context.Context, l *ledger, required ...string) error {
	for {
		t := l.current()
		err := d.Push(ctx, t, required...)
		if err == nil || ctx.Err() != nil || l.current().Epoch == t.Epoch {
			return err
		}
	}
}

func (d *Driver) handoff(ctx context.Context, l *ledger, move topology.Move) error {
	cur := l.current()
	s, ok := cur.Shard(move.Shard)
	if !ok {
		return fmt.Errorf("%w: shard %d does not exist", ErrConflict, move.Shard)
	}
	if move.From == move.To {
		return fmt.Errorf("%w: shard %d moves to its own owner", ErrConflict, move.Shard)
	}
	if m, ok := cur.Member(move.To); !ok || m.Role != topology.Active {
		return fmt.Errorf("%w: %q is not an active member", ErrConflict, move.To)
	}
	if s.Owner == move.To && !s.Fenced {
		// Done before; make sure every node holds the cutover.
		return d.pushLatest(ctx, l, move.To)
	}
	if s.Owner != move.From {
		return fmt.Errorf("%w: shard %d is owned by %q, not %q", ErrConflict, move.Shard, s.Owner, move.From)
	}
	log := d.logger().With("shard", move.Shard, "from", move.From, "to", move.To)

	// Step 1: To follows (and a fence left by a handoff to someone else is
	// lifted).
	if !s.Fenced || !slices.Contains(s.Followers, move.To) {
		if s.Fenced || !slices.Contains(s.Followers, move.To) {
			t, err := d.apply(l, move.Shard, func(sh *topology.Shard) {
				sh.Fenced = false
				if !slices.Contains(sh.Followers, move.To) {
					sh.Followers = append(sh.Followers, move.To)
				}
			})
			if errors.Is(err, ErrFailpoint) {
				return err
			}
			if err != nil {
				return fmt.Errorf("%w: record follow step: %w", ErrAborted, err)
			}
			log.Info("handoff: new owner follows", "epoch", t.Epoch)
		}
		if err := d.pushLatest(ctx, l, move.From, move.To); err != nil {
			return d.abort(ctx, l, move, err)
		}
		if err := d.failpoint(ctx, StepFollowPushed, l.current()); err != nil {
			return err
		}
		if err := d.waitCaughtUp(ctx, l.current(), move); err != nil {
			if d.ResumableCatchUp && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("%w: %w", ErrCatchingUp, err)
			}
			return d.abort(ctx, l, move, err)
		}
		if err := d.failpoint(ctx, StepCaughtUp, l.current()); err != nil {
			return err
		}
		// Step 2: fence.
		t, err := d.apply(l, move.Shard, func(sh *topology.Shard) { sh.Fenced = true })
		if err != nil {
			return d.abort(ctx, l, move, fmt.Errorf("record fence step: %w", err))
		}
		log.Info("handoff: fenced", "epoch", t.Epoch)
	}
	if err := d.pushLatest(ctx, l, move.From, move.To); err != nil {
		return d.abort(ctx, l, move, err)
	}
	if err := d.failpoint(ctx, StepFencePushed, l.current()); err != nil {
		return err
	}
	if err := d.waitFenced(ctx, l.current(), move); err != nil {
		return d.abort(ctx, l, move, err)
	}
	if err := d.failpoint(ctx, StepFenced, l.current()); err != nil {
		return err
	}

	// Step 3: cutover. The shard's daemons need no transfer: To has run
	// warm copies of them since it followed the shard, and waitFenced saw
	// them fold the fenced log to its end (see the package doc).
	next, err := d.apply(l, move.Shard, func(sh *topology.Shard) {
		// As topology.WithMove: To owns, From follows.
		sh.Followers = slices.DeleteFunc(sh.Followers, func(f string) bool { return f == move.To })
		if !slices.Contains(sh.Followers, move.From) {
			sh.Followers = append(sh.Followers, move.From)
		}
		sh.Owner, sh.Fenced = move.To, false
	})
	if err != nil {
		return d.abort(ctx, l, move, fmt.Errorf("record cutover: %w", err))
	}
	log.Info("handoff: cut over", "epoch", next.Epoch)
	if err := d.pushLatest(ctx, l, move.To); err != nil {
		return fmt.Errorf("handoff of shard %d cut over at epoch %d but not pushed (call Handoff again): %w", move.Shard, next.Epoch, err)
	}
	return d.failpoint(ctx, StepCutoverPushed, l.current())
}

// Abort rolls back the handoff of move in the recorded topology cur: a
// topology at a new epoch in which move.From owns the shard unfenced is
// recorded and pushed (To keeps following it). It runs even when ctx has
// ended. A shard that move.From no longer owns is left alone (ErrConflict).
func (d *Driver) Abort(ctx context.Context, cur *topology.Topology, move topology.Move) (*topology.Topology, error) {
	if s, ok := cur.Shard(move.Shard); !ok || s.Owner != move.From {
		return cur, fmt.Errorf("%w: shard %d is not owned by %q", ErrConflict, move.Shard, move.From)
	}
	l := &ledger{t: cur}
	err := d.rollback(ctx, l, move)
	return l.current(), err
}

// abort rolls the handoff back (see Abort) and returns an error wrapping
// ErrAborted and cause. A failpoint cause stops it without a rollback.
func (d *Driver) abort(ctx context.Context, l *ledger, move topology.Move, cause error) error {
	if errors.Is(cause, ErrFailpoint) {
		return cause
	}
	d.logger().Warn("handoff: aborting", "shard", move.Shard, "from", move.From, "to", move.To, "cause", cause)
	if err := d.rollback(ctx, l, move); err != nil {
		return fmt.Errorf("%w: %w; %w", ErrAborted, cause, err)
	}
	return fmt.Errorf("%w: shard %d stays with %s: %w", ErrAborted, move.Shard, move.From, cause)
}

// rollback records and pushes the latest topology with move.From the
// unfenced owner of the shard.
func (d *Driver) rollback(ctx context.Context, l *ledger, move topology.Move) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.stepTimeout())
	defer cancel()
	next, err := d.apply(l, move.Shard, func(sh *topology.Shard) {
		sh.Owner = move.From
		sh.Fenced = false
		sh.Followers = slices.DeleteFunc(sh.Followers, func(f string) bool { return f == move.From })
	})
	if errors.Is(err, ErrFailpoint) {
		return err
	}
	if err != nil {
		// The caller resumes from whichever topology was recorded last.
		return fmt.Errorf("rollback not recorded: %w", err)
	}
	d.logger().Info("handoff: rolled back", "shard", move.Shard, "owner", move.From, "epoch", next.Epoch)
	if err := d.pushLatest(actx, l, move.From); err != nil {
		return fmt.Errorf("rollback recorded but not pushed: %w", err)
	}
	// The failpoint sees the caller's ctx: a crash test stops the
	// operator by ending it.
	return d.failpoint(ctx, StepAbortPushed, l.current())
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
