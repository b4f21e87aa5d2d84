package install_test

import (
	"context"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/resources"
)

// sample reads a MeshCluster from config/samples.
func sample(file, namespace string) *meshv1.MeshCluster {
	data, err := os.ReadFile(filepath.Join(repoRoot, "config", "samples", file))
	Expect(err).NotTo(HaveOccurred())
	mc := &meshv1.MeshCluster{}
	Expect(yaml.UnmarshalStrict(data, mc)).To(Succeed(), file)
	mc.Namespace = namespace
	return mc
}

func ensureNamespace(c *cluster, name string) {
	err := c.client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if !apierrors.IsAlreadyExists(err) {
		Expect(err).NotTo(HaveOccurred())
	}
}

// expectChildren waits until the operator created every child of mc,
// each owned by mc, and wrote a status for mc's current generation.
func expectChildren(c *cluster, mc *meshv1.MeshCluster) *appsv1.StatefulSet {
	ctx := context.Background()
	owned := func(obj client.Object) func(Gomega) {
		return func(g Gomega) {
			g.Expect(c.client.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
			g.Expect(obj.GetOwnerReferences()).To(ContainElement(HaveField("UID", mc.UID)))
		}
	}
	key := func(obj client.Object, name string) client.Object {
		obj.SetNamespace(mc.Namespace)
		obj.SetName(name)
		return obj
	}
	sts := key(&appsv1.StatefulSet{}, resources.StatefulSetName(mc)).(*appsv1.StatefulSet)
	for _, obj := range []client.Object{
		key(&corev1.ConfigMap{}, resources.ConfigMapName(mc)),
		key(&corev1.Service{}, resources.HeadlessServiceName(mc)),
		key(&corev1.Service{}, resources.ClientServiceName(mc)),
		sts,
		key(&policyv1.PodDisruptionBudget{}, resources.PDBName(mc)),
	} {
		Eventually(owned(obj), 60*time.Second, 200*time.Millisecond).Should(Succeed(), "%T %s", obj, obj.GetName())
	}
	Eventually(func(g Gomega) {
		got := &meshv1.MeshCluster{}
		g.Expect(c.client.Get(ctx, client.ObjectKeyFromObject(mc), got)).To(Succeed())
		g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		g.Expect(meta.FindStatusCondition(got.Status.Conditions, meshv1.ConditionAvailable)).NotTo(BeNil())
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
	return sts
}

// expectEvent waits for an events.k8s.io Event about mc with the reason.
func expectEvent(c *cluster, mc *meshv1.MeshCluster, eventType, reason string) {
	Eventually(func(g Gomega) {
		list := &eventsv1.EventList{}
		g.Expect(c.client.List(context.Background(), list, client.InNamespace(mc.Namespace))).To(Succeed())
		g.Expect(list.Items).To(ContainElement(And(
			HaveField("Regarding.UID", mc.UID),
			HaveField("Type", eventType),
			HaveField("Reason", reason),
		)))
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
}

// exerciseOperator drives the operator through everything it does today on
// one MeshCluster: create every child, update the StatefulSet on an image
// change, refuse a scale-down with a condition and a Warning Event, record
// Events, write status.
func exerciseOperator(c *cluster, mc *meshv1.MeshCluster) {
	ctx := context.Background()
	Expect(mc.Spec.Nodes).To(BeNumerically(">=", 2), "the scale-down step needs room to lower nodes")
	Expect(c.client.Create(ctx, mc)).To(Succeed())
	expectChildren(c, mc)
	expectEvent(c, mc, corev1.EventTypeNormal, "Created")

	By("changing the image, which updates the StatefulSet template")
	patch := client.MergeFrom(mc.DeepCopy())
	mc.Spec.Image = "registry.example/mesh-node:next"
	Expect(c.client.Patch(ctx, mc, patch)).To(Succeed())
	Eventually(func(g Gomega) {
		sts := &appsv1.StatefulSet{}
		g.Expect(c.client.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resources.StatefulSetName(mc)}, sts)).To(Succeed())
		g.Expect(sts.Spec.Template.Spec.Containers[0].Image).To(Equal("registry.example/mesh-node:next"))
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
	expectEvent(c, mc, corev1.EventTypeNormal, "Updated")

	By("lowering nodes: with no shard placed on the leaving pod, the StatefulSet shrinks at once")
	Expect(c.client.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())
	patch = client.MergeFrom(mc.DeepCopy())
	mc.Spec.Nodes--
	Expect(c.client.Patch(ctx, mc, patch)).To(Succeed())
	Eventually(func(g Gomega) {
		sts := &appsv1.StatefulSet{}
		g.Expect(c.client.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resources.StatefulSetName(mc)}, sts)).To(Succeed())
		g.Expect(*sts.Spec.Replicas).To(Equal(mc.Spec.Replicas()))
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
	expectEvent(c, mc, corev1.EventTypeNormal, "ScaledDown")
}

// operatorRequests are the requests an operator makes while
// exerciseOperator runs; the RBAC of an install must allow each.
var operatorRequests = []string{
	"watch mesh.purplerain.io/meshclusters",
	"patch mesh.purplerain.io/meshclusters/status",
	"create core/configmaps",
	"create core/services",
	"create apps/statefulsets",
	"update apps/statefulsets",
	"create policy/poddisruptionbudgets",
	"watch apps/statefulsets",
	"watch core/services",
	"watch core/configmaps",
	"watch policy/poddisruptionbudgets",
	"create events.k8s.io/events",
}

// leaderElectionRequests are the requests of a leader-elected operator.
var leaderElectionRequests = []string{
	"create coordination.k8s.io/leases",
	"update coordination.k8s.io/leases",
	"create core/events",
}
