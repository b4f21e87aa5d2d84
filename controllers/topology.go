package controllers

import (
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/topology"
)

// podInfo is what topology planning needs of a node pod.
type podInfo struct {
	Name    string
	Ordinal int
	IP      string
	Ready   bool
	// Drained: the node was drained for a scale-down; it refuses writes
	// until its pod restarts, so it never joins again as it is.
	Drained bool
}

// DrainedAnnotation marks a pod whose node the operator drained. A
// recreated pod does not carry it.
const DrainedAnnotation = "mesh.purplerain.io/drained"

// ordinalOf is the StatefulSet ordinal in a pod name of cluster mc (-1 if
// the name is not one).
func ordinalOf(mc *meshv1.MeshCluster, name string) int {
	s, ok := strings.CutPrefix(name, mc.Name+"-")
	if !ok {
		return -1
	}
	ord, err := strconv.Atoi(s)
	if err != nil || ord < 0 {
		return -1
	}
	return ord
}

// podInfos extracts the node pods of mc that have an address, by name.
func podInfos(mc *meshv1.MeshCluster, pods []corev1.Pod) map[string]podInfo {
	out := map[string]podInfo{}
	prefix := mc.Name + "-"
	for _, p := range pods {
		if !strings.HasPrefix(p.Name, prefix) || p.DeletionTimestamp != nil {
			continue
		}
		ord, err := strconv.Atoi(strings.TrimPrefix(p.Name, prefix))
		if err != nil || ord < 0 {
			continue
		}
		info := podInfo{Name: p.Name, Ordinal: ord, IP: p.Status.PodIP, Drained: p.Annotations[DrainedAnnotation] == "true"}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				info.Ready = true
			}
		}
		out[p.Name] = info
	}
	return out
}

// member builds the topology member for a pod at ip.
func member(name, ip string, role topology.Role) topology.Member {
	hp := func(port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }
	return topology.Member{Name: name, Role: role, Admin: hp(nodeconfig.AdminPort), Data: hp(nodeconfig.DataPort), Wire: hp(nodeconfig.WirePort)}
}

// topologyFromStatus rebuilds the topology recorded in status (nil before
// the first placement), so a restarted operator resumes from it.
func topologyFromStatus(mc *meshv1.MeshCluster) *topology.Topology {
	st := &mc.Status
	if st.Epoch == 0 {
		return nil
	}
	t := &topology.Topology{
		Cluster: mc.Name, Epoch: uint64(st.Epoch), BaseShards: int(mc.Spec.Shards.Count),
		LeaseMillis: mc.Spec.Standby.LeaseDuration.Milliseconds(),
	}
	for _, m := range st.Members {
		t.Members = append(t.Members, member(m.Name, m.Address, topology.Role(m.Role)))
	}
	for _, s := range st.Shards {
		t.Shards = append(t.Shards, topology.Shard{ID: uint16(s.ID), Owner: s.Owner, Followers: slices.Clone(s.Followers), Fenced: s.Fenced, Draining: s.Draining})
	}
	return t
}

// planTopology decides the next topology from the recorded one and the
// pods. It returns nil while the first placement must wait (an active pod
// has no address yet) and reports whether anything changed; the caller
// bumps the epoch on a change.
//
// It places base shards over the actives at creation, lets pods that
// appear later join (standbys follow every shard; new actives own nothing
// until balancing moves shards to them), and follows members to their new
// addresses when a pod is recreated. A joining pod is active while the
// members kept by the spec have fewer actives than spec.nodes (roles
// follow counts, not ordinals: a failover swaps an active and a standby).
// Drained pods never join (they must restart first).
//
// Moving shards (rebalancing, scale-down, failover) is not planned here
// but by the operations in reconcile_rebalance.go, reconcile_scaling.go
// and reconcile_failover.go, one step per pass. Shards added by
// autoscaling (reconcile_autoscale.go) are carried from the record like
// base shards: a joining standby follows them too, and the planners above
// move them like any other shard.
func planTopology(mc *meshv1.MeshCluster, current *topology.Topology, pods map[string]podInfo) (*topology.Topology, bool) {
	nodes := int(mc.Spec.Nodes)
	replicas := int(mc.Spec.Replicas())
	role := func(ord int) topology.Role {
		if ord < nodes {
			return topology.Active
		}
		return topology.Standby
	}
	var joining []podInfo
	for _, p := range pods {
		if p.IP != "" && p.Ordinal < replicas && !p.Drained {
			joining = append(joining, p)
		}
	}
	slices.SortFunc(joining, func(a, b podInfo) int { return a.Ordinal - b.Ordinal })

	if current == nil {
		var members []topology.Member
		actives := 0
		for _, p := range joining {
			r := role(p.Ordinal)
			if r == topology.Active {
				actives++
			}
			members = append(members, member(p.Name, p.IP, r))
		}
		if actives < nodes {
			return nil, false
		}
		t, err := topology.Initial(mc.Name, members, int(mc.Spec.Shards.Count), mc.Spec.Standby.LeaseDuration.Milliseconds())
		if err != nil {
			return nil, false
		}
		return t, true
	}

	next := current.Clone()
	changed := false
	actives := 0
	for _, m := range next.Members {
		if m.Role == topology.Active && ordinalOf(mc, m.Name) < replicas {
			actives++
		}
	}
	role = func(int) topology.Role {
		if actives < nodes {
			actives++
			return topology.Active
		}
		return topology.Standby
	}
	if lease := mc.Spec.Standby.LeaseDuration.Milliseconds(); lease != next.LeaseMillis {
		next.LeaseMillis, changed = lease, true
	}
	for i, m := range next.Members {
		if p, ok := pods[m.Name]; ok && p.IP != "" {
			if updated := member(m.Name, p.IP, m.Role); updated != m {
				next.Members[i], changed = updated, true
			}
		}
	}
	for _, p := range joining {
		if _, ok := next.Member(p.Name); ok {
			continue
		}
		r := role(p.Ordinal)
		next.Members = append(next.Members, member(p.Name, p.IP, r))
		if r == topology.Standby {
			for i := range next.Shards {
				next.Shards[i].Followers = append(next.Shards[i].Followers, p.Name)
			}
		}
		changed = true
	}
	return next, changed
}
