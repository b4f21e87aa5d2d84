package controllers

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/resources"
	"github.com/purplerain/mesh-operator/controllers/status"
	"github.com/purplerain/mesh-operator/node/orchestrate"
	"github.com/purplerain/mesh-operator/node/topology"
)

// Rolling update, driven by the operator. The StatefulSet's update
// strategy is OnDelete: a changed pod template (image, resources, pod
// overrides, or the node configuration through the config hash
// annotation) only gives the StatefulSet a new update revision, and the
// StatefulSet controller recreates a pod at that revision when the
// operator deletes it. The operator rolls one pod at a time, the standbys
// first, then the actives, highest ordinal first in each group:
//
//  1. Moving: an active's shards are handed off to the other actives, one
//     fenced handoff per pass (the scale-down's handoff, planned with
//     topology.Balance as if the pod were leaving);
//  2. Restarting: the pod, owning nothing, is deleted; the roll waits
//     until the recreated pod is Ready at the update revision and its
//     member follows it to its new address;
//  3. Rejoining: the node holds the current topology and its followers
//     caught up with the owners; then the pod counts as updated.
//
// Before the next pod, every member must be ready and the actives
// balanced again: rebalancing moves shards back onto the restarted
// active. The roll is recorded in status.update (revision, pod, step), and
// every other decision is a function of the pods' revision labels and
// the recorded topology, so a restarted operator resumes it. It yields to
// a failover, a recorded move being resumed and a scale-down (planned
// before it); a pause stops it where it is.
//
// TODO(issue 8): a cluster with a single active has no peer to take its
// shards: its active is restarted without a handoff (a Warning Event says
// so) and a failover promotes the standby. A temporary role swap with
// the standby would avoid that.
//
// Under ackPolicy Standby an owner acknowledges a write once a follower
// has it, so before a pod is deleted every shard it follows must have
// another ready follower that caught up: the shards whose only ready
// follower it is first get a ready active that does not own them as a
// follower (the failover's live-follower step, recorded before it is
// pushed), and the deletion waits until the other followers caught up.
// Those extra followers are dropped by the follower convergence
// (planTidy) once the pod is back and caught up, before the next pod.

// Steps of status.update.step.
const (
	updateMoving     = "Moving"
	updateRestarting = "Restarting"
	updateRejoining  = "Rejoining"
)

const (
	// updateWait is how often a roll waiting for a pod looks again (pod
	// events wake it sooner).
	updateWait = 500 * time.Millisecond
	// rejoinTimeout bounds one wait for a restarted node to catch up; the
	// step is retried after it.
	rejoinTimeout = 20 * time.Second
)

// planUpdate returns the rolling update's next step (nil: none now),
// whether the roll holds the cluster (no rebalancing while an active is
// being emptied or restarted) and when to look again. It fills
// obs.PodRevision, obs.Update (through obs.UpdatePlanned) and announces
// the roll in obs.Operation.
func (r *MeshClusterReconciler) planUpdate(ctx context.Context, mc *meshv1.MeshCluster, t *topology.Topology, obs *status.Observation) (*operation, bool, time.Duration, error) {
	sts := obs.StatefulSet
	if sts == nil {
		return nil, false, 0, nil
	}
	podList := &corev1.PodList{}
	if err := r.List(ctx, podList, client.InNamespace(mc.Namespace), client.MatchingLabels(resources.SelectorLabels(mc))); err != nil {
		return nil, false, 0, fmt.Errorf("list pods: %w", err)
	}
	pods := map[string]*corev1.Pod{}
	obs.PodRevision = map[string]string{}
	for i := range podList.Items {
		p := &podList.Items[i]
		if ordinalOf(mc, p.Name) < 0 {
			continue
		}
		pods[p.Name] = p
		// A pod without the label was not made by the StatefulSet
		// controller: not ours to roll.
		if rev := p.Labels[appsv1.ControllerRevisionHashLabelKey]; rev != "" && p.DeletionTimestamp == nil {
			obs.PodRevision[p.Name] = rev
		}
	}
	stored := mc.Status.Update
	inFlight := stored != nil && stored.Pod != ""
	if sts.Status.ObservedGeneration < sts.Generation || sts.Status.UpdateRevision == "" {
		// The StatefulSet controller has not named the latest template's
		// revision yet.
		return nil, inFlight, time.Second, nil
	}
	rev := sts.Status.UpdateRevision
	replicas := int(mc.Spec.Replicas())

	var kept []topology.Member
	var outdated []topology.Member
	updated := 0
	for _, m := range t.Members {
		if ord := ordinalOf(mc, m.Name); ord < 0 || ord >= replicas {
			continue
		}
		kept = append(kept, m)
		switch prev, ok := obs.PodRevision[m.Name]; {
		case !ok:
			// Gone or being deleted: the pod in progress.
		case prev == rev:
			updated++
		default:
			outdated = append(outdated, m)
		}
	}
	// Roll order: standbys before actives, highest ordinal first.
	slices.SortFunc(outdated, func(a, b topology.Member) int {
		if a.Role != b.Role {
			if a.Role == topology.Standby {
				return -1
			}
			return 1
		}
		return ordinalOf(mc, b.Name) - ordinalOf(mc, a.Name)
	})

	upd := meshv1.UpdateStatus{Revision: rev, Updated: int32(updated)}
	if stored != nil {
		upd.Pod, upd.Step = stored.Pod, stored.Step
	}
	starting := stored == nil || stored.Revision != rev
	if upd.Pod != "" && !slices.ContainsFunc(kept, func(m topology.Member) bool { return m.Name == upd.Pod }) {
		// A scale-down removed the pod in progress.
		upd.Pod, upd.Step = "", ""
	}
	total := len(kept)
	progress := fmt.Sprintf("rolling update to revision %s: %d of %d pods updated", rev, updated, total)
	announce := func(msg string) {
		obs.Operation = &status.Operation{Reason: status.ReasonRollingUpdate, Message: progress + "; " + msg}
	}
	decide := func(pod, step string) {
		u := upd
		u.Pod, u.Step = pod, step
		obs.UpdatePlanned, obs.Update = true, &u
	}
	// step wraps a step's run so the first step of a roll announces it.
	step := func(op *operation) *operation {
		run := op.run
		op.reason = status.ReasonRollingUpdate
		op.message = progress + "; " + op.message
		obs.Operation = &status.Operation{Reason: op.reason, Message: op.message}
		op.run = func(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error {
			if starting {
				r.Recorder.Eventf(mc, nil, corev1.EventTypeNormal, "RollingUpdateStarted", "Update", "rolling %d pods to revision %s one at a time, standbys first", total-updated, rev)
			}
			return run(ctx, d, t)
		}
		return op
	}

	if upd.Pod == "" {
		ready := !slices.ContainsFunc(kept, func(m topology.Member) bool { return !obs.PodReady[m.Name] })
		fenced := slices.ContainsFunc(t.Shards, func(s topology.Shard) bool { return s.Fenced })
		// Extra active followers left beside standby followers (added
		// before the last pod's restart) are dropped first (planTidy).
		balanced := len(topology.Balance(t, nil, 1)) == 0 && !slices.ContainsFunc(t.Shards, func(s topology.Shard) bool {
			return len(extraFollowers(t, s)) > 0 && len(standbyFollowers(t, s)) > 0
		})
		if len(outdated) == 0 {
			if stored == nil {
				return nil, false, 0, nil
			}
			if !ready || fenced || !balanced {
				announce("waiting for every pod to be ready and the shards balanced")
				return nil, false, updateWait, nil
			}
			obs.UpdatePlanned, obs.Update = true, nil
			return step(&operation{message: "done", run: func(context.Context, *orchestrate.Driver, *topology.Topology) error {
				r.Recorder.Eventf(mc, nil, corev1.EventTypeNormal, "RollingUpdateFinished", "Update", "every pod runs revision %s and the shards are balanced again", rev)
				return nil
			}}), false, 0, nil
		}
		next := outdated[0]
		switch {
		case !ready:
			announce(fmt.Sprintf("waiting for every pod to be ready before updating %s", next.Name))
			return nil, false, updateWait, nil
		case fenced || !balanced:
			// Rebalancing (planned after the roll) moves shards back
			// onto the pod updated last.
			announce(fmt.Sprintf("waiting for the shards to be balanced before updating %s", next.Name))
			return nil, false, updateWait, nil
		}
		upd.Pod, upd.Step = next.Name, updateMoving
	}

	name := upd.Pod
	m, _ := t.Member(name)
	pod := pods[name]
	owned := t.OwnedBy(name)
	if m.Role == topology.Active && len(owned) > 0 && pod != nil && pod.DeletionTimestamp == nil && obs.PodRevision[name] != rev {
		if !obs.PodReady[name] {
			// Not ready with shards: a failover's business, not ours.
			decide(name, updateMoving)
			announce(fmt.Sprintf("waiting for %s to be ready to hand its shards off", name))
			return nil, true, updateWait, nil
		}
		// 1. Move its shards away, one handoff per pass.
		moves := topology.Balance(t, []string{name}, 1)
		if len(moves) > 0 {
			decide(name, updateMoving)
			op := r.moveOperation(mc, "RollingUpdate", moves[0], false, len(owned)-1)
			op.message = fmt.Sprintf("handing %s's shards off before its restart: %s", name, op.message)
			obs.Migrations = []meshv1.MigrationStatus{migration(*op.move)}
			return step(op), true, 0, nil
		}
		r.Recorder.Eventf(mc, nil, corev1.EventTypeWarning, "RollingUpdateUnsafe", "Update", "no other active node can take the shards of %s: restarting it without a handoff (its shards fail over)", name)
	}
	ackStandby := mc.Spec.Standby.AckPolicy == meshv1.AckStandby
	if ackStandby && pod != nil && pod.DeletionTimestamp == nil && obs.PodRevision[name] != rev {
		// Under ackPolicy Standby the shards whose only ready follower is
		// this pod would acknowledge nothing while it restarts: a ready
		// active follows them first (one recorded epoch).
		if shards := soleFollowerOf(t, name, obs.PodReady); len(shards) > 0 && addLiveFollowers(t, shards, name, obs.PodReady) != nil {
			decide(name, upd.Step)
			op := liveFollowersStep(shards, name, obs.PodReady, fmt.Sprintf("%s is the only ready follower of shards %v: a ready active follows them before its restart (ackPolicy Standby)", name, shards))
			return step(op), true, 0, nil
		}
	}
	switch {
	case pod != nil && pod.DeletionTimestamp == nil && obs.PodRevision[name] != rev:
		// 2. Delete the pod; the StatefulSet controller recreates it at
		// the update revision. Deleting again after an operator restart
		// is harmless (the UID precondition spares a recreated pod).
		// Under ackPolicy Standby, only once the other followers of its
		// shards caught up.
		decide(name, updateRestarting)
		uid, from := pod.UID, obs.PodRevision[name]
		ready := obs.PodReady
		return step(&operation{message: fmt.Sprintf("restarting %s (revision %s)", name, from), run: func(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error {
			if ackStandby {
				if err := waitCovered(ctx, d, t, name, ready); err != nil {
					return err
				}
			}
			p := &corev1.Pod{}
			p.Name, p.Namespace = name, mc.Namespace
			err := r.Delete(ctx, p, client.Preconditions{UID: &uid})
			if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("delete pod %s: %w", name, err)
			}
			r.Recorder.Eventf(mc, p, corev1.EventTypeNormal, "RestartingPod", "Update", "%s deleted to come back at revision %s (it owns no shard)", name, rev)
			return nil
		}}), true, 0, nil
	case pod == nil || pod.DeletionTimestamp != nil || !obs.PodReady[name] || !memberAt(m, pod):
		decide(name, updateRestarting)
		announce(fmt.Sprintf("waiting for %s to come back ready at the new revision", name))
		return nil, true, updateWait, nil
	}
	// 3. Back at the update revision: wait until its node holds the
	// current topology and follows its shards closely, then it counts.
	decide(name, updateRejoining)
	return step(&operation{message: fmt.Sprintf("%s rejoins: waiting for it to catch up", name), run: func(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error {
		if err := waitRejoined(ctx, d, t, name); err != nil {
			return err
		}
		done := upd
		done.Pod, done.Step = "", ""
		if err := r.recordUpdate(ctx, mc, &done); err != nil {
			return err
		}
		r.Recorder.Eventf(mc, nil, corev1.EventTypeNormal, "PodUpdated", "Update", "%s runs revision %s and caught up (%d of %d pods updated)", name, rev, updated, total)
		return nil
	}}), false, 0, nil
}

// memberAt says the topology follows pod to its current address.
func memberAt(m topology.Member, pod *corev1.Pod) bool {
	host, _, _ := net.SplitHostPort(m.Admin)
	return pod.Status.PodIP != "" && host == pod.Status.PodIP
}

// waitRejoined waits until name's node holds t (or newer) and, for every
// shard it follows, has what the owner had when the wait looked.
func waitRejoined(ctx context.Context, d *orchestrate.Driver, t *topology.Topology, name string) error {
	ctx, cancel := context.WithTimeout(ctx, rejoinTimeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var behind string
	for {
		var err error
		if behind, err = rejoinLag(ctx, d, t, name); err == nil && behind == "" {
			return nil
		}
		if err != nil {
			behind = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not catch up after its restart: %s", name, behind)
		case <-tick.C:
		}
	}
}

// shardAt is a member's shard in a role: its next seq, and whether a
// follower is connected with no lag.
type shardAt struct {
	next uint64
	live bool
}

// memberShards reads member's shards in role, and the epoch it holds.
func memberShards(ctx context.Context, d *orchestrate.Driver, t *topology.Topology, member, role string) (map[uint16]shardAt, uint64, error) {
	m, ok := t.Member(member)
	if !ok {
		return nil, 0, fmt.Errorf("%s is not a member at epoch %d", member, t.Epoch)
	}
	cctx, cancel := context.WithTimeout(ctx, reachabilityTimeout)
	defer cancel()
	st, err := d.Dial(m.Admin).Status(cctx)
	if err != nil {
		return nil, 0, fmt.Errorf("status of %s: %w", member, err)
	}
	out := map[uint16]shardAt{}
	for _, s := range st.Shards {
		if s.Role == role {
			out[s.ID] = shardAt{next: s.Next, live: s.Connected && s.Lag == 0}
		}
	}
	return out, st.Epoch, nil
}

// ownersNext reads what the owners of shards had (next seq per shard).
func ownersNext(ctx context.Context, d *orchestrate.Driver, t *topology.Topology, shards []uint16) (map[uint16]uint64, error) {
	ownerNext := map[uint16]uint64{}
	owners := map[string]bool{}
	for _, id := range shards {
		s, _ := t.Shard(id)
		owners[s.Owner] = true
	}
	for owner := range owners {
		owned, _, err := memberShards(ctx, d, t, owner, "owner")
		if err != nil {
			return nil, err
		}
		for id, v := range owned {
			ownerNext[id] = v.next
		}
	}
	return ownerNext, nil
}

// soleFollowerOf lists the shards whose only ready follower is name.
func soleFollowerOf(t *topology.Topology, name string, ready map[string]bool) []uint16 {
	var out []uint16
	for _, id := range t.FollowedBy(name) {
		s, _ := t.Shard(id)
		if !slices.ContainsFunc(s.Followers, func(f string) bool { return f != name && ready[f] }) {
			out = append(out, id)
		}
	}
	return out
}

// waitCovered waits until every shard name follows has another ready
// follower that holds t (or newer) and has what the owner had when the
// wait looked, so the shards keep acknowledging (ackPolicy Standby) while
// name is gone.
func waitCovered(ctx context.Context, d *orchestrate.Driver, t *topology.Topology, name string, ready map[string]bool) error {
	ctx, cancel := context.WithTimeout(ctx, rejoinTimeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		behind, err := coverLag(ctx, d, t, name, ready)
		if err == nil && behind == "" {
			return nil
		}
		if err != nil {
			behind = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the other followers of %s's shards did not catch up before its restart: %s", name, behind)
		case <-tick.C:
		}
	}
}

// coverLag names the shards of name that no other ready follower has
// caught up on ("" when none). A shard with no other ready follower at all
// (no active could be added: a single active) is not waited for.
func coverLag(ctx context.Context, d *orchestrate.Driver, t *topology.Topology, name string, ready map[string]bool) (string, error) {
	var followed []uint16
	for _, id := range t.FollowedBy(name) {
		if s, _ := t.Shard(id); slices.ContainsFunc(s.Followers, func(f string) bool { return f != name && ready[f] }) {
			followed = append(followed, id)
		}
	}
	if len(followed) == 0 {
		return "", nil
	}
	ownerNext, err := ownersNext(ctx, d, t, followed)
	if err != nil {
		return "", err
	}
	covered := map[uint16]bool{}
	others := map[string]bool{}
	for _, id := range followed {
		s, _ := t.Shard(id)
		for _, f := range s.Followers {
			if f != name && ready[f] {
				others[f] = true
			}
		}
	}
	for f := range others {
		theirs, epoch, err := memberShards(ctx, d, t, f, "follower")
		if err != nil || epoch < t.Epoch {
			continue // not a follower to count on now
		}
		for id, v := range theirs {
			if s, _ := t.Shard(id); slices.Contains(s.Followers, f) && (v.next >= ownerNext[id] || v.live) {
				covered[id] = true
			}
		}
	}
	var behind []string
	for _, id := range followed {
		if !covered[id] {
			behind = append(behind, fmt.Sprint(id))
		}
	}
	if len(behind) > 0 {
		return "shards " + strings.Join(behind, ", "), nil
	}
	return "", nil
}

// rejoinLag says what name's node still lacks ("" when nothing).
func rejoinLag(ctx context.Context, d *orchestrate.Driver, t *topology.Topology, name string) (string, error) {
	followed := t.FollowedBy(name)
	// The owners first: the follower must have reached what they had.
	ownerNext, err := ownersNext(ctx, d, t, followed)
	if err != nil {
		return "", err
	}
	mine, epoch, err := memberShards(ctx, d, t, name, "follower")
	if err != nil {
		return "", err
	}
	if epoch < t.Epoch {
		return fmt.Sprintf("it holds epoch %d, not %d", epoch, t.Epoch), nil
	}
	var behind []string
	for _, id := range followed {
		v, ok := mine[id]
		if !ok || v.next < ownerNext[id] && !v.live {
			behind = append(behind, fmt.Sprint(id))
		}
	}
	if len(behind) > 0 {
		return "behind on shards " + strings.Join(behind, ", "), nil
	}
	return "", nil
}

// recordUpdate writes status.update after a step (optimistic locking, as
// every record of the operator).
func (r *MeshClusterReconciler) recordUpdate(ctx context.Context, mc *meshv1.MeshCluster, u *meshv1.UpdateStatus) error {
	patch := client.MergeFromWithOptions(mc.DeepCopy(), client.MergeFromWithOptimisticLock{})
	mc.Status.Update = u
	if err := r.Status().Patch(ctx, mc, patch); err != nil {
		return fmt.Errorf("record rolling update of %s: %w", u.Revision, err)
	}
	return nil
}
