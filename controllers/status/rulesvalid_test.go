package status

import (
	"errors"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/node/topology"
)

func TestRulesValidNamesTheRuleAndWhatStays(t *testing.T) {
	mc := &meshv1.MeshCluster{ObjectMeta: metav1.ObjectMeta{Generation: 7}}
	mc.Spec.Rules = []meshv1.RuleSpec{{Name: "a"}, {Name: "b"}}
	c := RulesValid(Observation{Cluster: mc})
	if c.Status != metav1.ConditionTrue || c.Reason != ReasonRulesCompiled || c.Message != "2 rules compiled" || c.ObservedGeneration != 7 {
		t.Fatalf("valid: %+v", c)
	}
	c = RulesValid(Observation{Cluster: mc, RulesError: errors.New(`rule "b" (spec.rules[1]): require: unknown op "gte"`), ActiveRules: 1})
	if c.Status != metav1.ConditionFalse || c.Reason != ReasonInvalidRule ||
		!strings.HasPrefix(c.Message, `rule "b" (spec.rules[1])`) || !strings.HasSuffix(c.Message, "the nodes keep the last valid rules (1 rule)") {
		t.Fatalf("invalid: %+v", c)
	}
}

// A member's subnet comes from what its node reported this pass, or stays
// as recorded when the node did not answer.
func TestRecordTopologyKeepsSubnetsNotObserved(t *testing.T) {
	topo := &topology.Topology{Cluster: "c", Epoch: 2, LeaseMillis: 1000, BaseShards: 1,
		Members: []topology.Member{{Name: "a", Role: topology.Active, Admin: "10.0.0.1:9440"}, {Name: "b", Role: topology.Standby, Admin: "10.0.0.2:9440"}},
		Shards:  []topology.Shard{{ID: 0, Owner: "a", Followers: []string{"b"}}}}
	s := meshv1.MeshClusterStatus{Members: []meshv1.MemberStatus{{Name: "a", Subnet: "3.7"}, {Name: "b", Subnet: "3.7"}}}
	RecordTopology(&s, Observation{Cluster: &meshv1.MeshCluster{}, Topology: topo, Subnets: map[string]string{"a": "3.8"}})
	got := map[string]string{}
	for _, m := range s.Members {
		got[m.Name] = m.Subnet
	}
	if got["a"] != "3.8" || got["b"] != "3.7" {
		t.Fatalf("subnets = %v, want a reported 3.8 and b kept at 3.7", got)
	}
}
