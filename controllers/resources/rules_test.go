package resources

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
)

// rulesCluster is a spec as the API server defaults it, with rules.
func rulesCluster(rules ...meshv1.RuleSpec) *meshv1.MeshCluster {
	mc := &meshv1.MeshCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "ns"}}
	mc.Spec.Shards.Count = 4
	mc.Spec.Standby.AckPolicy = meshv1.AckLeader
	mc.Spec.Standby.LeaseDuration = metav1.Duration{Duration: 2 * time.Second}
	mc.Spec.Storage.Mode = meshv1.StorageMemory
	mc.Spec.Storage.Fsync.Policy = "Never"
	mc.Spec.Rules = rules
	return mc
}

func requireRule(name, cond string) meshv1.RuleSpec {
	return meshv1.RuleSpec{Name: name, Require: &apiextensionsv1.JSON{Raw: []byte(cond)}}
}

func TestRulesNameTheBadRuleAndKeepNumbersExact(t *testing.T) {
	specs, err := Rules(rulesCluster(
		requireRule("big", `{"field":"n","op":"lt","value":9223372036854775807}`),
		meshv1.RuleSpec{Name: "rate", RateLimit: &meshv1.RateLimitSpec{Key: "device", Max: 5, Window: metav1.Duration{Duration: time.Second}}},
	))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(specs[0].Require.Value); got != "9223372036854775807" {
		t.Fatalf("the constant was rewritten: %s", got)
	}
	if rl := specs[1].RateLimit; rl == nil || rl.Max != 5 || rl.Window.Duration != time.Second || rl.Key != "device" {
		t.Fatalf("rate limit = %+v", specs[1].RateLimit)
	}

	for name, tc := range map[string]struct {
		rule meshv1.RuleSpec
		want string
	}{
		"unknown op":         {requireRule("bad-op", `{"field":"speed","op":"gte","value":1}`), `rule "bad-op" (spec.rules[1]): require: unknown op "gte"`},
		"misspelt field":     {requireRule("typo", `{"feild":"speed","op":"exists"}`), `rule "typo" (spec.rules[1]): require: json: unknown field "feild"`},
		"two forms":          {requireRule("both", `{"field":"a","op":"exists","not":{"field":"b","op":"exists"}}`), `rule "both" (spec.rules[1]): require: a condition needs exactly one`},
		"when not an object": {meshv1.RuleSpec{Name: "w", When: &apiextensionsv1.JSON{Raw: []byte(`[1]`)}, Require: &apiextensionsv1.JSON{Raw: []byte(`{"field":"a","op":"exists"}`)}}, `rule "w" (spec.rules[1]): when: json: cannot unmarshal array`},
	} {
		_, err := Rules(rulesCluster(requireRule("fine", `{"field":"a","op":"exists"}`), tc.rule))
		var re *RulesError
		if !errors.As(err, &re) || re.Index != 1 || re.Name != tc.rule.Name || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want a *RulesError starting %q", name, err, tc.want)
		}
	}
}

// An invalid spec.rules leaves the ConfigMap's rules as they were (the
// nodes keep the last valid ones); a valid change replaces them.
func TestConfigMapKeepsTheLastValidRules(t *testing.T) {
	cm := &corev1.ConfigMap{}
	if err := UpdateConfigMap(rulesCluster(requireRule("v1", `{"field":"a","op":"exists"}`)), cm, []byte("pub")); err != nil {
		t.Fatal(err)
	}
	if err := UpdateConfigMap(rulesCluster(requireRule("v2", `{"field":"a","op":"bogus"}`)), cm, []byte("pub")); err != nil {
		t.Fatalf("an invalid rule must not fail the render: %v", err)
	}
	if got := RenderedRules(cm); len(got) != 1 || got[0].Name != "v1" {
		t.Fatalf("after an invalid change the ConfigMap holds %+v, want the last valid v1", got)
	}
	if err := UpdateConfigMap(rulesCluster(requireRule("v3", `{"field":"a","op":"absent"}`)), cm, []byte("pub")); err != nil {
		t.Fatal(err)
	}
	if got := RenderedRules(cm); len(got) != 1 || got[0].Name != "v3" {
		t.Fatalf("a valid change was not rendered: %+v", got)
	}
}

// The pods' config hash ignores the rules section (a rules change rolls no
// pod), moves with everything else, and for a configuration without rules
// is the plain hash of the file, as before rules existed.
func TestConfigHashLeavesRulesOut(t *testing.T) {
	render := func(mc *meshv1.MeshCluster) *corev1.ConfigMap {
		t.Helper()
		cm := &corev1.ConfigMap{}
		if err := UpdateConfigMap(mc, cm, []byte("pub")); err != nil {
			t.Fatal(err)
		}
		return cm
	}
	none := render(rulesCluster())
	sum := sha256.Sum256([]byte(none.Data[nodeconfig.FileName]))
	if ConfigHash(none) != hex.EncodeToString(sum[:8]) {
		t.Fatal("without rules the hash is no longer the plain hash of the file")
	}
	one := render(rulesCluster(requireRule("a", `{"field":"a","op":"exists"}`)))
	two := render(rulesCluster(requireRule("a", `{"field":"a","op":"absent"}`), requireRule("b", `{"field":"b","op":"exists"}`)))
	if ConfigHash(one) != ConfigHash(none) || ConfigHash(two) != ConfigHash(none) {
		t.Fatal("the rules changed the config hash")
	}
	more := rulesCluster(requireRule("a", `{"field":"a","op":"exists"}`))
	more.Spec.Shards.Count = 8
	if ConfigHash(render(more)) == ConfigHash(one) {
		t.Fatal("a change outside the rules left the config hash unchanged")
	}
}

func TestSubnetsRenderWithTheLabelsFile(t *testing.T) {
	mc := rulesCluster()
	mc.Spec.Subnets = &meshv1.SubnetsSpec{Policy: []meshv1.SubnetRule{{Label: "region", Level: 0, Values: map[string]int32{"eu": 3}}}}
	cm := &corev1.ConfigMap{}
	if err := UpdateConfigMap(mc, cm, []byte("pub")); err != nil {
		t.Fatal(err)
	}
	c := NodeConfig(mc)
	if c.Subnets == nil || c.Subnets.LabelsFile != PodInfoDir+"/"+PodLabelsFile || c.Subnets.Policy[0].Values["eu"] != 3 {
		t.Fatalf("subnets rendered as %+v", c.Subnets)
	}
	sts := StatefulSet(mc, 2, "h")
	var mounted bool
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if d := v.DownwardAPI; d != nil && len(d.Items) == 1 && d.Items[0].FieldRef.FieldPath == "metadata.labels" && d.Items[0].Path == PodLabelsFile {
			mounted = true
		}
	}
	if !mounted {
		t.Fatal("no downward API volume with the pod's labels")
	}
	mc.Spec.Subnets.Policy[0].Values["us"] = 300
	if err := UpdateConfigMap(mc, cm, []byte("pub")); err == nil || !strings.Contains(err.Error(), `values["us"]: 300`) {
		t.Fatalf("a level value of 300 must be refused naming it, got %v", err)
	}
}
