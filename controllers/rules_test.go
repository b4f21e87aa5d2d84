package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	meshclient "github.com/purplerain/mesh-operator/client"
	"github.com/purplerain/mesh-operator/controllers/resources"
	"github.com/purplerain/mesh-operator/engine/subnet"
)

func ruleJSON(s string) *apiextensionsv1.JSON { return &apiextensionsv1.JSON{Raw: []byte(s)} }

// podIdentity is what a restart would change: the pod object's UID, its
// restart count, and the address of the node process the test kubelet
// runs for it (a new process gets a new address).
type podIdentity struct {
	uid      types.UID
	restarts int32
	ip       string
}

func podIdentities(g Gomega, k *testKubelet, cluster string) map[string]podIdentity {
	pods := &corev1.PodList{}
	g.Expect(k8sClient.List(context.Background(), pods, client.InNamespace("default"),
		client.MatchingLabels(resources.SelectorLabels(clusterOf(cluster))))).To(Succeed())
	out := map[string]podIdentity{}
	for _, p := range pods.Items {
		id := podIdentity{uid: p.UID, ip: k.ip(p.Name)}
		for _, cs := range p.Status.ContainerStatuses {
			id.restarts += cs.RestartCount
		}
		out[p.Name] = id
	}
	return out
}

var _ = Describe("Behaviour rules and subnets", func() {
	ctx := context.Background()

	It("compiles the rules of the sample config/samples/mesh_rules.yaml as the nodes do", func() {
		data, err := os.ReadFile(filepath.Join("..", "config", "samples", "mesh_rules.yaml"))
		Expect(err).NotTo(HaveOccurred())
		mc := &meshv1.MeshCluster{}
		Expect(yaml.Unmarshal(data, mc)).To(Succeed())
		specs, err := resources.Rules(mc)
		Expect(err).NotTo(HaveOccurred())
		Expect(specs).To(HaveLen(3))
		cfg := resources.NodeConfig(mc)
		policy, err := subnet.NewPolicy(cfg.Subnets.Policy)
		Expect(err).NotTo(HaveOccurred())
		id, err := policy.Assign(mc.Spec.PodTemplate.Labels)
		Expect(err).NotTo(HaveOccurred())
		Expect(id.String()).To(Equal("3.7"))
	})

	It("enforces spec.rules at ingest, applies a change without restarting pods, keeps the last valid rules when one is invalid, and reports subnets from pod labels", func() {
		const name = "rho"
		mc := newCluster(name)
		mc.Spec.Nodes = 2
		mc.Spec.Shards.Count = 4
		mc.Spec.Rules = []meshv1.RuleSpec{{
			Name:    "speed-in-range",
			Require: ruleJSON(`{"and":[{"field":"speed","op":"ge","value":0},{"field":"speed","op":"le","value":400}]}`),
		}}
		mc.Spec.PodTemplate.Labels = map[string]string{"mesh.example/region": "eu", "mesh.example/fleet": "trucks"}
		mc.Spec.Subnets = &meshv1.SubnetsSpec{Policy: []meshv1.SubnetRule{
			{Label: "mesh.example/region", Level: 0, Values: map[string]int32{"eu": 3, "us": 4}},
			{Label: "mesh.example/fleet", Level: 1, Values: map[string]int32{"trucks": 7}},
		}}
		Expect(k8sClient.Create(ctx, mc)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, mc))).To(Succeed()) })
		kubelet := startKubelet(name)

		By("running with the rule valid and every member in subnet 3.7, assigned from its pod labels")
		Eventually(func(g Gomega) {
			got := getCluster(g, name)
			g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, meshv1.ConditionAvailable)).To(BeTrue(), "%v", got.Status.Conditions)
			g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, meshv1.ConditionRulesValid)).To(BeTrue(), "%v", got.Status.Conditions)
			g.Expect(got.Status.Members).To(HaveLen(3))
			for _, m := range got.Status.Members {
				g.Expect(m.Subnet).To(Equal("3.7"), "member %s", m.Name)
			}
		}, 60*time.Second, 200*time.Millisecond).Should(Succeed())

		sdk, err := meshclient.New(ctx, meshclient.Options{Addresses: kubelet.dataAddrs(), Credentials: dataCredentials(name)})
		Expect(err).NotTo(HaveOccurred())
		ingest := func(payload string) error {
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			_, err := sdk.Ingest(cctx, meshclient.Event{Payload: []byte(payload)})
			return err
		}
		refusedBy := func(err error) string {
			var re *meshclient.RuleRejectedError
			if errors.As(err, &re) {
				return re.Rule
			}
			return ""
		}

		By("refusing an event that breaks the rule, naming the rule to the SDK caller")
		Expect(ingest(`{"speed":120}`)).To(Succeed())
		err = ingest(`{"speed":900}`)
		Expect(refusedBy(err)).To(Equal("speed-in-range"), "got %v", err)

		podsBefore := podIdentities(Default, kubelet, name)
		Expect(podsBefore).To(HaveLen(3))
		hashBefore := getSTS(name)(Default).Spec.Template.Annotations[resources.ConfigHashAnnotation]
		Expect(hashBefore).NotTo(BeEmpty())

		By("patching the rule: the refused event is accepted without any pod restarting")
		base := getCluster(Default, name)
		patch := client.MergeFrom(base.DeepCopy())
		base.Spec.Rules[0].Require = ruleJSON(`{"and":[{"field":"speed","op":"ge","value":0},{"field":"speed","op":"le","value":1000}]}`)
		patched := time.Now()
		Expect(k8sClient.Patch(ctx, base, patch)).To(Succeed())
		Eventually(func() error { return ingest(`{"speed":900}`) }, 30*time.Second, 20*time.Millisecond).Should(Succeed())
		fmt.Fprintf(GinkgoWriter, "rules change: from the patch to the refused event accepted: %s\n", time.Since(patched).Round(time.Millisecond))
		err = ingest(`{"speed":1500}`)
		Expect(refusedBy(err)).To(Equal("speed-in-range"), "the changed rule still bounds speed: got %v", err)
		Eventually(func(g Gomega) []string {
			var reasons []string
			for _, e := range eventsFor(g, name) {
				reasons = append(reasons, e.Reason)
			}
			return reasons
		}, 10*time.Second, 200*time.Millisecond).Should(ContainElement("RulesApplied"))
		// The pods' template (and so their revision) did not change, and
		// the very same pods and node processes serve.
		Consistently(func(g Gomega) {
			g.Expect(getSTS(name)(g).Spec.Template.Annotations[resources.ConfigHashAnnotation]).To(Equal(hashBefore))
			g.Expect(podIdentities(g, kubelet, name)).To(Equal(podsBefore))
		}, 3*time.Second, 250*time.Millisecond).Should(Succeed())

		By("an invalid rule: RulesValid False naming it, a Warning Event, and the last valid rules still enforced")
		base = getCluster(Default, name)
		patch = client.MergeFrom(base.DeepCopy())
		// Tightening speed-in-range in the same change: none of it may
		// apply while the set is invalid.
		base.Spec.Rules[0].Require = ruleJSON(`{"field":"speed","op":"le","value":500}`)
		base.Spec.Rules = append(base.Spec.Rules, meshv1.RuleSpec{Name: "bad-op", Require: ruleJSON(`{"field":"speed","op":"gte","value":1}`)})
		Expect(k8sClient.Patch(ctx, base, patch)).To(Succeed())
		generation := base.Generation
		Eventually(func(g Gomega) {
			got := getCluster(g, name)
			c := meta.FindStatusCondition(got.Status.Conditions, meshv1.ConditionRulesValid)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal("InvalidRule"))
			g.Expect(c.Message).To(ContainSubstring(`rule "bad-op" (spec.rules[1])`))
			g.Expect(c.Message).To(ContainSubstring(`unknown op "gte"`))
			g.Expect(c.ObservedGeneration).To(Equal(generation))
			// The rest of the reconcile went on.
			g.Expect(got.Status.ObservedGeneration).To(Equal(generation))
			g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, meshv1.ConditionAvailable)).To(BeTrue())
			g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, meshv1.ConditionDegraded)).To(BeFalse())
		}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
		Eventually(func(g Gomega) {
			var found bool
			for _, e := range eventsFor(g, name) {
				if e.Reason == "InvalidRules" && e.Type == corev1.EventTypeWarning && strings.Contains(e.Note, `"bad-op"`) {
					found = true
				}
			}
			g.Expect(found).To(BeTrue())
		}, 10*time.Second, 200*time.Millisecond).Should(Succeed())
		// The previous set (speed ≤ 1000) is what every node enforces, and
		// what the ConfigMap gives a node that restarts.
		Consistently(func(g Gomega) {
			g.Expect(ingest(`{"speed":700}`)).To(Succeed())
			g.Expect(refusedBy(ingest(`{"speed":1500}`))).To(Equal("speed-in-range"))
		}, 3*time.Second, 500*time.Millisecond).Should(Succeed())
		cm := &corev1.ConfigMap{}
		Expect(k8sClient.Get(ctx, key(resources.ConfigMapName(clusterOf(name))), cm)).To(Succeed())
		rendered := resources.RenderedRules(cm)
		Expect(rendered).To(HaveLen(1))
		Expect(string(rendered[0].Require.And[1].Value)).To(Equal("1000"))
		Expect(podIdentities(Default, kubelet, name)).To(Equal(podsBefore))
	})
})
