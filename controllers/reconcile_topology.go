package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/resources"
	"github.com/purplerain/mesh-operator/controllers/status"
)

// reconcileTopology decides the cluster's topology and records it in the
// observation; the status update persists it and only then is it pushed to
// the nodes (reconcile order matters: a topology is never pushed before it
// is recorded, so a restarted operator never reuses an epoch the nodes
// already saw with other contents).
func (r *MeshClusterReconciler) reconcileTopology(ctx context.Context, mc *meshv1.MeshCluster, obs *status.Observation, change bool) error {
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.InNamespace(mc.Namespace), client.MatchingLabels(resources.SelectorLabels(mc))); err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	infos := podInfos(mc, pods.Items)
	obs.PodReady = map[string]bool{}
	for name, p := range infos {
		obs.PodReady[name] = p.Ready
	}
	current := topologyFromStatus(mc)
	if !change {
		obs.Topology = current
		return nil
	}
	next, changed := planTopology(mc, current, infos)
	if next == nil {
		obs.Topology = current
		return nil
	}
	if changed {
		if current != nil {
			next.Epoch = current.Epoch + 1
		}
		log.FromContext(ctx).Info("topology changed", "epoch", next.Epoch, "members", len(next.Members))
		r.Recorder.Eventf(mc, nil, corev1.EventTypeNormal, "TopologyChanged", "Place", "topology epoch %d: %d members, %d shards", next.Epoch, len(next.Members), len(next.Shards))
	}
	obs.Topology = next
	return nil
}

// observeTopology fills the observation without changing the topology
// (paused clusters).
func (r *MeshClusterReconciler) observeTopology(ctx context.Context, mc *meshv1.MeshCluster, obs *status.Observation) error {
	return r.reconcileTopology(ctx, mc, obs, false)
}
