package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/status"
	"github.com/purplerain/mesh-operator/node/adminapi"
	"github.com/purplerain/mesh-operator/node/orchestrate"
	"github.com/purplerain/mesh-operator/node/topology"
)

// Shard moves. A pass plans up to migration.maxConcurrent fenced handoffs
// of distinct shards and runs them at once (orchestrate.Driver.Handoffs:
// every step of every handoff is recorded on top of the latest record, so
// status always holds one consistent topology). Each move is recorded in
// status.migrations, with when it started, before its first step.
//
// A move is bounded by migration.timeout from its recorded start, across
// passes and operator restarts: a new owner still catching up when a
// pass's wait ends stays recorded (the shard stays writable at its owner)
// and the next pass continues the wait. When the timeout passes, the move
// is rolled back (the source stays the owner, unfenced) with a Warning
// Event MigrationTimedOut, and onTimeout decides:
//
//   - Abort: the record stays in status.migrations with phase Aborted and
//     the shard is not moved again while the spec is unchanged (any edit of
//     the MeshCluster tries again); Progressing says so, and a scale-down
//     that needs the shard moved is blocked (ScaleDownBlocked).
//   - Retry: the move starts again at once (its start is reset).

// Migration phases in status.migrations.
const (
	phaseHandoff = "Handoff"
	phaseAborted = "Aborted"
)

// errStillMoving says a step did not finish in this pass but is not a
// failure (a new owner still catching up, standbys not caught up yet): the
// next pass continues it.
var errStillMoving = errors.New("still in progress")

// planRebalance returns the next shard moves towards max skew 1 between
// the actives (after a scale-up the new actives own nothing): up to
// migration.maxConcurrent handoffs of distinct shards, run at once. It
// returns nil when the cluster is balanced, an active is not ready, or
// only aborted moves are left.
func (r *MeshClusterReconciler) planRebalance(mc *meshv1.MeshCluster, t *topology.Topology, ready map[string]bool) *operation {
	for _, m := range t.Members {
		if m.Role == topology.Active && !ready[m.Name] {
			// Wait for every active: a move to or from a node that is
			// not ready would only fail (and a failover may be due).
			return nil
		}
	}
	all := topology.Balance(t, nil, 0)
	moves := pickMoves(t, all, abortedShards(mc), maxConcurrent(mc))
	if len(moves) == 0 {
		return nil
	}
	return r.movesOperation(mc, "Rebalancing", moves, false, len(all)-len(moves))
}

// maxConcurrent is migration.maxConcurrent, at least 1.
func maxConcurrent(mc *meshv1.MeshCluster) int {
	return max(int(mc.Spec.Migration.MaxConcurrent), 1)
}

// pickMoves takes up to limit moves of distinct shards from a plan, each
// starting at the shard's current owner and none of an aborted shard.
func pickMoves(t *topology.Topology, plan []topology.Move, aborted map[uint16]bool, limit int) []topology.Move {
	var out []topology.Move
	seen := map[uint16]bool{}
	for _, m := range plan {
		s, ok := t.Shard(m.Shard)
		if !ok || s.Owner != m.From || aborted[m.Shard] || seen[m.Shard] {
			continue
		}
		seen[m.Shard] = true
		out = append(out, m)
		if len(out) == limit {
			break
		}
	}
	return out
}

// moveOperation is one fenced handoff (movesOperation of one move).
func (r *MeshClusterReconciler) moveOperation(mc *meshv1.MeshCluster, reason string, move topology.Move, scaleDown bool, remaining int) *operation {
	return r.movesOperation(mc, reason, []topology.Move{move}, scaleDown, remaining)
}

// movesOperation runs fenced handoffs of distinct shards at once,
// announced in Progressing and by an Event before and after each.
func (r *MeshClusterReconciler) movesOperation(mc *meshv1.MeshCluster, reason string, moves []topology.Move, scaleDown bool, remaining int) *operation {
	var msg string
	if len(moves) == 1 {
		msg = fmt.Sprintf("moving shard %d from %s to %s (%d moves left)", moves[0].Shard, moves[0].From, moves[0].To, remaining)
	} else {
		msg = fmt.Sprintf("moving shards %s (%d moves left)", describeMoves(moves), remaining)
	}
	return &operation{reason: reason, message: msg, scaleDown: scaleDown, move: &moves[0], moves: moves,
		run: func(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error {
			return r.runMoves(ctx, mc, d, t, moves)
		}}
}

func describeMoves(moves []topology.Move) string {
	parts := make([]string, 0, len(moves))
	for _, m := range moves {
		parts = append(parts, fmt.Sprintf("%d (%s → %s)", m.Shard, m.From, m.To))
	}
	return strings.Join(parts, ", ")
}

// migrationTimeout is migration.timeout (5m when unset).
func migrationTimeout(mc *meshv1.MeshCluster) time.Duration {
	if d := mc.Spec.Migration.Timeout.Duration; d > 0 {
		return d
	}
	return 5 * time.Minute
}

// startedAt is when move's record in status says it started (now when it
// has none).
func startedAt(mc *meshv1.MeshCluster, move topology.Move, now time.Time) time.Time {
	for _, m := range mc.Status.Migrations {
		if sameMove(m, move) && m.StartedAt != nil {
			return m.StartedAt.Time
		}
	}
	return now
}

func sameMove(m meshv1.MigrationStatus, move topology.Move) bool {
	return uint16(m.Shard) == move.Shard && m.From == move.From && m.To == move.To
}

// runMoves runs the handoffs of moves at once; those past
// migration.timeout are rolled back and handled by onTimeout.
func (r *MeshClusterReconciler) runMoves(ctx context.Context, mc *meshv1.MeshCluster, d *orchestrate.Driver, t *topology.Topology, moves []topology.Move) error {
	timeout := migrationTimeout(mc)
	now := time.Now()
	deadline := map[uint16]time.Time{}
	var run, due []topology.Move
	// Each wait ends at the earliest deadline, so a timed-out move is
	// handled in the pass it times out in; and within 20s, so a step fits
	// in one Reconcile (the next pass continues a move still catching up).
	step := 20 * time.Second
	for _, m := range moves {
		deadline[m.Shard] = startedAt(mc, m, now).Add(timeout)
		left := time.Until(deadline[m.Shard])
		if left <= 0 {
			due = append(due, m)
			continue
		}
		run = append(run, m)
		step = min(step, left)
	}
	d.StepTimeout = step
	events := func(reason, format string, args ...any) {
		r.Recorder.Eventf(mc, nil, corev1.EventTypeNormal, reason, "Move", format, args...)
	}
	var (
		errs    []error
		pending bool
		cur     = t
	)
	if len(run) > 0 {
		if err := reachable(ctx, d, t, run); err != nil {
			return err
		}
		for _, m := range run {
			events("ShardMoving", "shard %d: %s → %s (epoch %d)", m.Shard, m.From, m.To, t.Epoch)
			r.observeMoveStarted(mc, m)
		}
		next, results := d.Handoffs(ctx, t, run)
		cur = next
		for i, err := range results {
			m := run[i]
			switch {
			case err == nil:
				s, _ := cur.Shard(m.Shard)
				if s.Owner == m.To {
					events("ShardMoved", "shard %d now owned by %s (epoch %d)", m.Shard, m.To, cur.Epoch)
					r.observeMoveDone(mc, m, true)
				}
			case errors.Is(err, orchestrate.ErrFailpoint):
				return err
			case (errors.Is(err, orchestrate.ErrCatchingUp) || errors.Is(err, orchestrate.ErrAborted)) && !time.Now().Before(deadline[m.Shard]):
				due = append(due, m)
			case errors.Is(err, orchestrate.ErrCatchingUp):
				pending = true
			default:
				r.observeMoveDone(mc, m, false)
				errs = append(errs, fmt.Errorf("handoff of shard %d from %s to %s: %w", m.Shard, m.From, m.To, err))
			}
		}
	}
	for _, m := range due {
		if err := r.timedOut(ctx, mc, d, cur, m, timeout); err != nil {
			if errors.Is(err, orchestrate.ErrFailpoint) {
				return err
			}
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if pending {
		return errStillMoving
	}
	return nil
}

// reachable checks both ends of every move answer (a dead end would only
// time out).
func reachable(ctx context.Context, d *orchestrate.Driver, t *topology.Topology, moves []topology.Move) error {
	checked := map[string]bool{}
	for _, move := range moves {
		for _, name := range []string{move.From, move.To} {
			if checked[name] {
				continue
			}
			checked[name] = true
			m, ok := t.Member(name)
			if !ok {
				return fmt.Errorf("%s is not a member at epoch %d", name, t.Epoch)
			}
			cctx, cancel := context.WithTimeout(ctx, reachabilityTimeout)
			_, err := d.Dial(m.Admin).Status(cctx)
			cancel()
			if err != nil {
				return fmt.Errorf("node %s is unreachable: %w", name, err)
			}
		}
	}
	return nil
}

// timedOut handles a move past migration.timeout: a fenced shard is
// unfenced at its source (a shard being caught up on is writable at its
// source already: nothing to roll back), then onTimeout decides whether it
// starts again (Retry: its start is reset) or stays aborted.
func (r *MeshClusterReconciler) timedOut(ctx context.Context, mc *meshv1.MeshCluster, d *orchestrate.Driver, t *topology.Topology, m topology.Move, timeout time.Duration) error {
	s, ok := t.Shard(m.Shard)
	if !ok || s.Owner != m.From {
		return nil // moved or gone meanwhile: nothing to time out
	}
	if s.Fenced {
		// The rollback's own waits are not bounded by the move's deadline.
		d.StepTimeout = max(d.StepTimeout, 5*time.Second)
		if _, err := d.Abort(ctx, t, m); err != nil {
			return fmt.Errorf("roll back the timed-out move of shard %d: %w", m.Shard, err)
		}
	}
	retry := mc.Spec.Migration.OnTimeout == meshv1.OnTimeoutRetry
	started := startedAt(mc, m, time.Now())
	err := r.patchMigration(ctx, mc, m, func(ms *meshv1.MigrationStatus) {
		if retry {
			now := metav1.NewTime(time.Now().Truncate(time.Second))
			ms.StartedAt, ms.Phase = &now, phaseHandoff
		} else {
			ms.Phase = phaseAborted
		}
	})
	if err != nil {
		return err
	}
	r.observeMoveDone(mc, m, false)
	what := fmt.Sprintf("the move of shard %d from %s to %s (started at %s) exceeded migration.timeout %s", m.Shard, m.From, m.To, started.UTC().Format(time.RFC3339), timeout)
	if retry {
		r.Recorder.Eventf(mc, nil, corev1.EventTypeWarning, "MigrationTimedOut", "Move", "%s: %s keeps the shard; starting the move again (onTimeout Retry)", what, m.From)
	} else {
		r.Recorder.Eventf(mc, nil, corev1.EventTypeWarning, "MigrationTimedOut", "Move", "%s: aborted, %s keeps the shard (onTimeout Abort); it is not moved again until the MeshCluster is edited", what, m.From)
	}
	return nil
}

// patchMigration changes move's record in status.migrations (adding it
// when missing), with optimistic locking.
func (r *MeshClusterReconciler) patchMigration(ctx context.Context, mc *meshv1.MeshCluster, move topology.Move, f func(*meshv1.MigrationStatus)) error {
	patch := client.MergeFromWithOptions(mc.DeepCopy(), client.MergeFromWithOptimisticLock{})
	i := slices.IndexFunc(mc.Status.Migrations, func(m meshv1.MigrationStatus) bool { return sameMove(m, move) })
	if i < 0 {
		mc.Status.Migrations = append(mc.Status.Migrations, migration(move))
		i = len(mc.Status.Migrations) - 1
	}
	f(&mc.Status.Migrations[i])
	if err := r.Status().Patch(ctx, mc, patch); err != nil {
		return fmt.Errorf("record migration of shard %d: %w", move.Shard, err)
	}
	return nil
}

// reachabilityTimeout bounds the check that both ends of a move answer.
const reachabilityTimeout = 2 * time.Second

// migration is the status record of a move in flight.
func migration(m topology.Move) meshv1.MigrationStatus {
	return meshv1.MigrationStatus{Shard: int32(m.Shard), From: m.From, To: m.To, Phase: phaseHandoff}
}

// withMoves is records with the aborted ones kept and moves recorded.
func withMoves(records []meshv1.MigrationStatus, moves []topology.Move) []meshv1.MigrationStatus {
	var out []meshv1.MigrationStatus
	for _, m := range records {
		if m.Phase == phaseAborted && !slices.ContainsFunc(moves, func(mv topology.Move) bool { return mv.Shard == uint16(m.Shard) }) {
			out = append(out, m)
		}
	}
	for _, mv := range moves {
		out = append(out, migration(mv))
	}
	return out
}

// stampMigrations gives each record its start: the one recorded for the
// same move, else now (to the second, as status stores it, so an
// unchanged record makes no write).
func stampMigrations(mc *meshv1.MeshCluster, records []meshv1.MigrationStatus) []meshv1.MigrationStatus {
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	for i := range records {
		if records[i].StartedAt != nil {
			continue
		}
		move := topology.Move{Shard: uint16(records[i].Shard), From: records[i].From, To: records[i].To}
		records[i].StartedAt = &now
		for _, old := range mc.Status.Migrations {
			if sameMove(old, move) && old.StartedAt != nil && old.Phase == records[i].Phase {
				records[i].StartedAt = old.StartedAt.DeepCopy()
			}
		}
	}
	return records
}

// abortedShards are the shards whose move timed out under onTimeout Abort
// and stays aborted (keptAborted).
func abortedShards(mc *meshv1.MeshCluster) map[uint16]bool {
	out := map[uint16]bool{}
	for _, m := range keptAborted(mc, topologyFromStatus(mc)) {
		out[uint16(m.Shard)] = true
	}
	return out
}

// keptAborted are the aborted moves that still hold: the spec was not
// edited since (an edit tries them again) and the source still owns the
// shard.
func keptAborted(mc *meshv1.MeshCluster, t *topology.Topology) []meshv1.MigrationStatus {
	if t == nil || mc.Generation != mc.Status.ObservedGeneration {
		return nil
	}
	var out []meshv1.MigrationStatus
	for _, m := range mc.Status.Migrations {
		if s, ok := t.Shard(uint16(m.Shard)); ok && m.Phase == phaseAborted && s.Owner == m.From {
			out = append(out, m)
		}
	}
	return out
}

// resumable says move is under way in t: its source still owns the shard
// and has fenced it or the target follows it, and the target is still an
// active member.
func resumable(t *topology.Topology, move topology.Move) bool {
	s, ok := t.Shard(move.Shard)
	if !ok || s.Owner != move.From {
		return false
	}
	if m, ok := t.Member(move.To); !ok || m.Role != topology.Active {
		return false
	}
	return s.Fenced || slices.Contains(s.Followers, move.To)
}

// planResume finishes what a previous pass (or a previous operator) left
// in the record. The moves recorded in status.migrations that are under
// way (resumable) are resumed together: the Driver continues each from
// its recorded step (a fenced shard from the fence: catch-up, then
// cutover). A fenced shard without a recorded move is unfenced at a new
// epoch. Other records are dropped: the move finished or was rolled back
// before its first step, and planning starts again from the topology.
// Aborted records stay while they hold (keptAborted), and Progressing
// says so when nothing else runs.
func (r *MeshClusterReconciler) planResume(mc *meshv1.MeshCluster, t *topology.Topology, obs *status.Observation) *operation {
	aborted := keptAborted(mc, t)
	var inflight []topology.Move
	for _, mig := range obs.Migrations {
		move := topology.Move{Shard: uint16(mig.Shard), From: mig.From, To: mig.To}
		if mig.Phase != phaseAborted && resumable(t, move) && len(inflight) < maxConcurrent(mc) {
			inflight = append(inflight, move)
		}
	}
	obs.Migrations = withMoves(aborted, nil)
	if len(inflight) > 0 {
		op := r.movesOperation(mc, "Resuming", inflight, false, 0)
		if len(inflight) == 1 {
			op.message = fmt.Sprintf("resuming the recorded move of shard %d from %s to %s", inflight[0].Shard, inflight[0].From, inflight[0].To)
		} else {
			op.message = fmt.Sprintf("resuming the recorded moves of shards %s", describeMoves(inflight))
		}
		obs.Operation = &status.Operation{Reason: op.reason, Message: op.message}
		obs.Migrations = withMoves(aborted, inflight)
		return op
	}
	var fenced []uint16
	for _, s := range t.Shards {
		if s.Fenced {
			fenced = append(fenced, s.ID)
		}
	}
	if len(fenced) == 0 {
		if len(aborted) > 0 {
			var parts []string
			for _, m := range aborted {
				parts = append(parts, fmt.Sprintf("shard %d stays with %s (its move to %s exceeded migration.timeout)", m.Shard, m.From, m.To))
			}
			obs.Operation = &status.Operation{Reason: "MigrationAborted", Message: strings.Join(parts, "; ") + "; onTimeout is Abort: edit the MeshCluster to try again"}
		}
		return nil
	}
	msg := fmt.Sprintf("unfencing shards %v (no move recorded for them)", fenced)
	obs.Operation = &status.Operation{Reason: "Resuming", Message: msg}
	return &operation{reason: "Resuming", message: msg, run: func(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error {
		next := t.Clone()
		next.Epoch++
		for i := range next.Shards {
			next.Shards[i].Fenced = false
		}
		return recordAndPush(ctx, d, next)
	}}
}

// Followers converge to standbys. A handoff leaves its old owner following
// the shard (topology.WithMove), an aborted or timed-out move leaves its
// target following it, and a failover gives promoted shards a live active
// follower while the failed node is down (addLiveFollowers). Once every
// ready standby following a shard has caught up with its owner (and at
// least one has), those active followers are dropped at a new epoch: the
// shard is followed by its standbys only, as at creation. A shard with a
// move under way keeps its followers (the target must), and one with no
// caught-up standby keeps them (they are its only other copy).

// planTidy returns the step that drops the active followers of shards
// with standby followers, or nil when no shard has any.
func (r *MeshClusterReconciler) planTidy(mc *meshv1.MeshCluster, t *topology.Topology, obs *status.Observation) *operation {
	moving := map[uint16]bool{}
	for _, m := range obs.Migrations {
		if m.Phase != phaseAborted {
			moving[uint16(m.Shard)] = true
		}
	}
	var shards []uint16
	for _, s := range t.Shards {
		if moving[s.ID] || s.Fenced {
			continue
		}
		if len(extraFollowers(t, s)) > 0 && len(standbyFollowers(t, s)) > 0 {
			shards = append(shards, s.ID)
		}
	}
	if len(shards) == 0 {
		return nil
	}
	ready := obs.PodReady
	// Not announced in Progressing: it changes no owner, and it may wait
	// for standbys for a long time.
	return &operation{reason: "TidyingFollowers", message: fmt.Sprintf("dropping the active followers of shards %v once their standbys caught up", shards),
		run: func(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error {
			return r.tidyFollowers(ctx, mc, d, t, shards, ready)
		}}
}

// extraFollowers are the active members following s.
func extraFollowers(t *topology.Topology, s topology.Shard) []string {
	var out []string
	for _, f := range s.Followers {
		if m, ok := t.Member(f); ok && m.Role == topology.Active {
			out = append(out, f)
		}
	}
	return out
}

func standbyFollowers(t *topology.Topology, s topology.Shard) []string {
	var out []string
	for _, f := range s.Followers {
		if m, ok := t.Member(f); ok && m.Role == topology.Standby {
			out = append(out, f)
		}
	}
	return out
}

// tidyFollowers drops the active followers of those of shards whose ready
// standby followers all caught up with the owner (each standby's next seq
// at least the owner's, read before it). errStillMoving when none did.
func (r *MeshClusterReconciler) tidyFollowers(ctx context.Context, mc *meshv1.MeshCluster, d *orchestrate.Driver, t *topology.Topology, shards []uint16, ready map[string]bool) error {
	statuses := map[string]*adminapi.Status{}
	statusOf := func(name string) *adminapi.Status {
		if st, ok := statuses[name]; ok {
			return st
		}
		statuses[name] = nil
		m, ok := t.Member(name)
		if !ok {
			return nil
		}
		cctx, cancel := context.WithTimeout(ctx, reachabilityTimeout)
		defer cancel()
		if st, err := d.Dial(m.Admin).Status(cctx); err == nil && st.Epoch >= t.Epoch {
			statuses[name] = &st
		}
		return statuses[name]
	}
	next := t.Clone()
	next.Epoch++
	var dropped []string
	for _, id := range shards {
		s, _ := t.Shard(id)
		owner := statusOf(s.Owner)
		if owner == nil {
			continue
		}
		ownerNext, ok := localShardNext(*owner, id, "owner")
		if !ok {
			continue
		}
		caught, behind := 0, false
		for _, f := range standbyFollowers(t, s) {
			if !ready[f] {
				continue
			}
			st := statusOf(f)
			if st == nil {
				behind = true
				continue
			}
			if n, ok := localShardNext(*st, id, "follower"); ok && n >= ownerNext {
				caught++
			} else {
				behind = true
			}
		}
		if behind || caught == 0 {
			continue
		}
		extra := extraFollowers(t, s)
		for i := range next.Shards {
			if next.Shards[i].ID == id {
				next.Shards[i].Followers = slices.DeleteFunc(next.Shards[i].Followers, func(f string) bool { return slices.Contains(extra, f) })
			}
		}
		dropped = append(dropped, fmt.Sprintf("%d: %s", id, strings.Join(extra, ", ")))
	}
	if len(dropped) == 0 {
		return errStillMoving
	}
	if err := recordAndPush(ctx, d, next); err != nil {
		return err
	}
	r.Recorder.Eventf(mc, nil, corev1.EventTypeNormal, "FollowersDropped", "Tidy", "epoch %d: standbys caught up, active followers dropped (shard %s)", next.Epoch, strings.Join(dropped, "; shard "))
	return nil
}

// localShardNext is the next seq a node's status reports for shard id in
// role ("owner" or "follower").
func localShardNext(st adminapi.Status, id uint16, role string) (uint64, bool) {
	for _, s := range st.Shards {
		if s.ID == id && s.Role == role {
			return s.Next, true
		}
	}
	return 0, false
}
