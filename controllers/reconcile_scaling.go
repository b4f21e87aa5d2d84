package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/status"
	"github.com/purplerain/mesh-operator/node/orchestrate"
	"github.com/purplerain/mesh-operator/node/topology"
)

// Safe scale-down, two-phase and cancellable (TiDB's and Strimzi's
// operators do the same). The StatefulSet removes the highest ordinals, so
// the members whose ordinal is at or above spec's replica count leave; if
// the members kept then have more actives than spec.nodes, the
// highest-ordinal extra actives become standbys. Each pass runs one step:
//
//  1. a kept standby becomes active when the kept actives are too few
//     (after a failover swapped roles);
//  2. fenced handoffs of shards off leaving or demoted actives, to the
//     least loaded kept actives (up to migration.maxConcurrent at once; a
//     move aborted on timeout blocks the scale-down);
//  3. the demoted actives become standbys following every shard;
//  4. each leaving active is drained (its pod is annotated first: the
//     node's drain is final, so a cancelled scale-down restarts that pod);
//  5. the leaving members are removed from the topology at a new epoch.
//
// Only when no member of the recorded topology is at a leaving ordinal is
// the StatefulSet lowered (desiredReplicas), and the leaving data PVCs
// are deleted under pvcRetention Delete. Raising spec.nodes again cancels:
// the members stop leaving, drained pods are restarted, rebalancing moves
// shards back. A step that fails is not retried for a few seconds; the
// scale-down waits with ScaleDownBlocked True and a Warning Event, and the
// rest of the reconcile goes on.

// planScaling returns the next scale-down step (nil: none now) and whether
// a scale-down or role change is pending.
func (r *MeshClusterReconciler) planScaling(ctx context.Context, mc *meshv1.MeshCluster, t *topology.Topology, pods map[string]podInfo, obs *status.Observation) (*operation, bool, error) {
	replicas := int(mc.Spec.Replicas())
	nodes := int(mc.Spec.Nodes)
	if err := r.restartDrainedPods(ctx, mc, pods, replicas); err != nil {
		return nil, false, err
	}

	byOrdinal := func(a, b string) int { return ordinalOf(mc, a) - ordinalOf(mc, b) }
	var leaving, keptActives, keptStandbys []string
	for _, m := range t.Members {
		switch ord := ordinalOf(mc, m.Name); {
		case ord < 0 || ord >= replicas:
			leaving = append(leaving, m.Name)
		case m.Role == topology.Active:
			keptActives = append(keptActives, m.Name)
		default:
			keptStandbys = append(keptStandbys, m.Name)
		}
	}
	slices.SortFunc(keptActives, byOrdinal)
	slices.SortFunc(keptStandbys, byOrdinal)
	var demoted []string
	if len(keptActives) > nodes {
		demoted = keptActives[nodes:]
	}
	obs.Leaving = map[string]bool{}
	for _, n := range append(slices.Clone(leaving), demoted...) {
		obs.Leaving[n] = true
	}
	pending := len(leaving) > 0 || len(demoted) > 0
	announce := func(op *operation) (*operation, bool, error) {
		obs.Operation = &status.Operation{Reason: op.reason, Message: op.message}
		return op, true, nil
	}

	// 1. Too few kept actives: a ready kept standby becomes one.
	if len(keptActives) < nodes {
		i := slices.IndexFunc(keptStandbys, func(n string) bool { return obs.PodReady[n] })
		if i < 0 {
			if pending {
				r.block(mc, obs, fmt.Sprintf("only %d of the %d active nodes the spec keeps are in the topology and no ready standby can become one", len(keptActives), nodes))
			}
			return nil, pending, nil
		}
		name := keptStandbys[i]
		return announce(&operation{reason: "ScalingDown", scaleDown: pending, message: fmt.Sprintf("%s becomes active (the spec keeps %d actives)", name, nodes),
			run: func(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error {
				next := t.Clone()
				next.Epoch++
				for i := range next.Members {
					if next.Members[i].Name == name {
						next.Members[i].Role = topology.Active
					}
				}
				return recordAndPush(ctx, d, next)
			}})
	}
	if !pending {
		return nil, false, nil
	}

	// 2. Move the shards off leaving and demoted actives.
	emptying := append(slices.Clone(leaving), demoted...)
	owned := 0
	for _, n := range emptying {
		owned += len(t.OwnedBy(n))
	}
	if owned > 0 {
		all := topology.Balance(t, emptying, 0)
		if len(all) == 0 {
			r.block(mc, obs, fmt.Sprintf("no active node stays to take the %d shards of %s", owned, strings.Join(emptying, ", ")))
			return nil, true, nil
		}
		moves := pickMoves(t, all, abortedShards(mc), maxConcurrent(mc))
		if len(moves) == 0 {
			r.block(mc, obs, fmt.Sprintf("the moves of shards off %s timed out and were aborted (migration.onTimeout Abort); edit the MeshCluster to try again", strings.Join(emptying, ", ")))
			return nil, true, nil
		}
		return announce(r.movesOperation(mc, "ScalingDown", moves, true, len(all)-len(moves)))
	}

	// 3. Demoted actives become standbys that follow every shard.
	if len(demoted) > 0 {
		return announce(&operation{reason: "ScalingDown", scaleDown: true, message: fmt.Sprintf("%s become standbys", strings.Join(demoted, ", ")),
			run: func(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error {
				next := t.Clone()
				next.Epoch++
				for i := range next.Members {
					if slices.Contains(demoted, next.Members[i].Name) {
						next.Members[i].Role = topology.Standby
					}
				}
				for i := range next.Shards {
					for _, n := range demoted {
						if !slices.Contains(next.Shards[i].Followers, n) {
							next.Shards[i].Followers = append(next.Shards[i].Followers, n)
						}
					}
				}
				return recordAndPush(ctx, d, next)
			}})
	}

	// 4. Drain each leaving active whose node still runs (again after a
	// restart between the pod's drained mark and the end of the drain:
	// draining is idempotent).
	for _, name := range leaving {
		m, _ := t.Member(name)
		p, ok := pods[name]
		if m.Role != topology.Active || !ok || p.IP == "" {
			continue
		}
		if p.Drained {
			pod := &corev1.Pod{}
			if err := r.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: name}, pod); err != nil || pod.Annotations[drainDoneAnnotation] == "true" {
				continue
			}
		}
		return announce(&operation{reason: "ScalingDown", scaleDown: true, message: fmt.Sprintf("draining %s", name),
			run: func(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error {
				return r.drain(ctx, mc, d, t, name)
			}})
	}

	// 5. Remove the leaving members.
	return announce(&operation{reason: "ScalingDown", scaleDown: true, message: fmt.Sprintf("removing %s from the topology", strings.Join(leaving, ", ")),
		run: func(ctx context.Context, d *orchestrate.Driver, t *topology.Topology) error {
			next := t.Clone()
			next.Epoch++
			next.Members = slices.DeleteFunc(next.Members, func(m topology.Member) bool { return slices.Contains(leaving, m.Name) })
			for i := range next.Shards {
				next.Shards[i].Followers = slices.DeleteFunc(next.Shards[i].Followers, func(f string) bool { return slices.Contains(leaving, f) })
			}
			if err := recordAndPush(ctx, d, next); err != nil {
				return err
			}
			r.Recorder.Eventf(mc, nil, corev1.EventTypeNormal, "MembersLeft", "Scale", "epoch %d: %s left the topology; the StatefulSet shrinks next", next.Epoch, strings.Join(leaving, ", "))
			return nil
		}})
}

// drainDoneAnnotation marks a drained pod whose node finished its drain
// (DrainedAnnotation is set before the drain starts).
const drainDoneAnnotation = "mesh.purplerain.io/drain-done"

// drain marks the pod drained (recorded before the final drain, so a
// cancelled scale-down knows to restart it), then drains the node, then
// marks the drain done.
func (r *MeshClusterReconciler) drain(ctx context.Context, mc *meshv1.MeshCluster, d *orchestrate.Driver, t *topology.Topology, name string) error {
	pod := &corev1.Pod{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: name}, pod); err != nil {
		return fmt.Errorf("get pod %s: %w", name, client.IgnoreNotFound(err))
	}
	if pod.Annotations[DrainedAnnotation] != "true" {
		patch := client.MergeFrom(pod.DeepCopy())
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[DrainedAnnotation] = "true"
		if err := r.Patch(ctx, pod, patch); err != nil {
			return fmt.Errorf("mark pod %s drained: %w", name, err)
		}
		if err := failpoint(ctx, client.ObjectKeyFromObject(mc), StepDrainAnnotated, t.Epoch); err != nil {
			return err
		}
	}
	if _, err := d.Drain(ctx, t, name); err != nil {
		return err
	}
	patch := client.MergeFrom(pod.DeepCopy())
	pod.Annotations[drainDoneAnnotation] = "true"
	if err := r.Patch(ctx, pod, patch); err != nil {
		return fmt.Errorf("mark pod %s drain done: %w", name, err)
	}
	r.Recorder.Eventf(mc, pod, corev1.EventTypeNormal, "Drained", "Scale", "%s owns nothing and is drained", name)
	return nil
}

// restartDrainedPods deletes the pods of drained nodes the spec keeps (a
// scale-down was cancelled after their drain, which is final): they come
// back fresh and rejoin.
func (r *MeshClusterReconciler) restartDrainedPods(ctx context.Context, mc *meshv1.MeshCluster, pods map[string]podInfo, replicas int) error {
	for _, p := range pods {
		if !p.Drained || p.Ordinal >= replicas {
			continue
		}
		pod := &corev1.Pod{}
		pod.Name, pod.Namespace = p.Name, mc.Namespace
		if err := r.Delete(ctx, pod); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("restart drained pod %s: %w", p.Name, err)
		}
		r.Recorder.Eventf(mc, nil, corev1.EventTypeNormal, "ScaleDownCancelled", "Scale", "restarting %s: its node was drained for a scale-down that was cancelled", p.Name)
	}
	return nil
}

// block reports a scale-down that cannot proceed: ScaleDownBlocked True
// with the reason, and a Warning Event when the reason is new.
func (r *MeshClusterReconciler) block(mc *meshv1.MeshCluster, obs *status.Observation, reason string) {
	obs.ScaleDownBlocked = reason
	report := false
	r.memory.with(client.ObjectKeyFromObject(mc), func(cm *clusterMemory) {
		report = cm.blocked != reason
		cm.blocked = reason
	})
	if report {
		r.Recorder.Eventf(mc, nil, corev1.EventTypeWarning, "ScaleDownBlocked", "Scale", "scale-down not done, the StatefulSet keeps its pods: %s", reason)
	}
}

// desiredReplicas decides the StatefulSet's replica count. Growing is
// always allowed. Shrinking waits until no member of the recorded topology
// has a leaving ordinal (the scale-down steps above removed them); before
// the first placement nothing holds data and it shrinks at once.
func (r *MeshClusterReconciler) desiredReplicas(mc *meshv1.MeshCluster, sts *appsv1.StatefulSet) int32 {
	want := mc.Spec.Replicas()
	current := want
	if sts.Spec.Replicas != nil {
		current = *sts.Spec.Replicas
	}
	if want >= current {
		return want
	}
	if t := topologyFromStatus(mc); t != nil {
		for _, m := range t.Members {
			if ord := ordinalOf(mc, m.Name); ord < 0 || ord >= int(want) {
				return current
			}
		}
	}
	r.Recorder.Eventf(mc, sts, corev1.EventTypeNormal, "ScaledDown", "Scale", "StatefulSet lowered from %d to %d pods: the leaving nodes own nothing and left the topology", current, want)
	return want
}
