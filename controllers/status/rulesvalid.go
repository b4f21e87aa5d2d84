package status

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
)

// Reasons of the RulesValid condition.
const (
	ReasonRulesCompiled = "Compiled"
	ReasonInvalidRule   = "InvalidRule"
)

// RulesValid is True when spec.rules compiled (the nodes enforce them), or
// False naming the bad rule and why; the nodes then keep the last valid
// rules, and nothing else of the reconcile is held up.
func RulesValid(o Observation) metav1.Condition {
	c := metav1.Condition{Type: meshv1.ConditionRulesValid, ObservedGeneration: o.Cluster.Generation}
	if o.RulesError != nil {
		c.Status, c.Reason = metav1.ConditionFalse, ReasonInvalidRule
		c.Message = fmt.Sprintf("%v; the nodes keep the last valid rules (%s)", o.RulesError, plural(int32(o.ActiveRules), "rule"))
		return c
	}
	c.Status, c.Reason = metav1.ConditionTrue, ReasonRulesCompiled
	c.Message = fmt.Sprintf("%s compiled", plural(int32(len(o.Cluster.Spec.Rules)), "rule"))
	return c
}
