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
		info := podInfo{Name: p.Name, Ordinal: ord, IP: p.Status.PodIP}
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
		t.Shards = append(t.Shards, topology.Shard{ID: uint16(s.ID), Owner: s.Owner, Followers: slices.Clone(s.Followers), Fenced: s.Fenced})
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
// addresses when a pod is recreated.
//
// TODO(issue 8): balancing scale-up by fenced handoffs, safe scale-down,
// failover by promotion, autoscaled shards.
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
		if p.IP != "" && p.Ordinal < replicas {
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
