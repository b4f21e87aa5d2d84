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
// TODO(issue 8): under ackPolicy Standby, shards whose only follower is
// the standby being restarted acknowledge nothing until it is back and
// caught up (seconds); giving them a live active follower first would
// keep them acknowledging.

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
		balanced := len(topology.Balance(t, nil, 1)) == 0
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
	switch {
	case pod != nil && pod.DeletionTimestamp == nil && obs.PodRevision[name] != rev:
		// 2. Delete the pod; the StatefulSet controller recreates it at
		// the update revision. Deleting again after an operator restart
		// is harmless (the UID precondition spares a recreated pod).
		decide(name, updateRestarting)
		uid, from := pod.UID, obs.PodRevision[name]
		return step(&operation{message: fmt.Sprintf("restarting %s (revision %s)", name, from), run: func(ctx context.Context, _ *orchestrate.Driver, _ *topology.Topology) error {
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

// rejoinLag says what name's node still lacks ("" when nothing).
func rejoinLag(ctx context.Context, d *orchestrate.Driver, t *topology.Topology, name string) (string, error) {
	// shards reads a member's shards in role: next seq, and whether a
	// follower is connected with no lag.
	type shardAt struct {
		next uint64
		live bool
	}
	shards := func(member, role string) (map[uint16]shardAt, uint64, error) {
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
	followed := t.FollowedBy(name)
	// The owners first: the follower must have reached what they had.
	ownerNext := map[uint16]uint64{}
	owners := map[string]bool{}
	for _, id := range followed {
		s, _ := t.Shard(id)
		owners[s.Owner] = true
	}
	for owner := range owners {
		owned, _, err := shards(owner, "owner")
		if err != nil {
			return "", err
		}
		for id, v := range owned {
			ownerNext[id] = v.next
		}
	}
	mine, epoch, err := shards(name, "follower")
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
