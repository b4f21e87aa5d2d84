package install_test

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	localcluster "github.com/purplerain/mesh-operator/hack/localcluster/cluster"
	"github.com/purplerain/mesh-operator/hack/localcluster/kubelet"
)

// On the local cluster of issue 9 the node pods really run (mesh-node as
// processes, readiness from their probes), so a chart install can be
// followed to an Available MeshCluster. The operator's own pod cannot run
// there yet (the process kubelet does not mount ServiceAccount tokens), so
// the operator runs as a process with the chart's ServiceAccount token, as
// in the envtest specs.
var _ = Describe("helm install on the local cluster", Ordered, func() {
	var c *cluster
	ctx := context.Background()

	BeforeAll(func() {
		dir := GinkgoT().TempDir()
		meshNode := filepath.Join(dir, "mesh-node")
		build := exec.Command("go", "build", "-o", meshNode, "./cmd/mesh-node")
		build.Dir = repoRoot
		out, err := build.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))

		assets := os.Getenv("KUBEBUILDER_ASSETS")
		Expect(assets).NotTo(BeEmpty())
		lc, err := localcluster.Start(ctx, localcluster.Options{
			StateDir:  filepath.Join(dir, "state"),
			AssetsDir: assets,
			Images:    kubelet.ImageMap{"ghcr.io/purplerain/mesh-node": meshNode},
			// Pod addresses apart from the e2e suite's and make demo's.
			PodIPFirst: netip.MustParseAddr("127.0.3.10"),
			PodIPLast:  netip.MustParseAddr("127.0.3.250"),
			Backoff:    kubelet.Backoff{Initial: time.Second, Max: 10 * time.Second, Reset: time.Minute},
		})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(lc.Stop()).To(Succeed()) })

		c = &cluster{cfg: lc.Config, kubeconfig: lc.Kubeconfig, dir: dir}
		c.client, err = client.New(lc.Config, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())
		c.clientset, err = kubernetes.NewForConfig(lc.Config)
		Expect(err).NotTo(HaveOccurred())
	})

	It("installs the chart, and the operator under its ServiceAccount brings a sample to Available with running pods", func() {
		_, err := c.run(helmBin, "install", helmRelease, chartDir, "--namespace", helmNamespace, "--create-namespace")
		Expect(err).NotTo(HaveOccurred())
		dep := &appsv1.Deployment{}
		Expect(c.client.Get(ctx, client.ObjectKey{Namespace: helmNamespace, Name: helmRelease}, dep)).To(Succeed())
		startOperator(c.serviceAccountKubeconfig(helmNamespace, helmRelease), dep.Spec.Template.Spec.Containers[0].Args)

		ensureNamespace(c, "apps")
		mc := sample("mesh_small.yaml", "apps")
		Expect(c.client.Create(ctx, mc)).To(Succeed())
		Eventually(func(g Gomega) {
			got := &meshv1.MeshCluster{}
			g.Expect(c.client.Get(ctx, client.ObjectKeyFromObject(mc), got)).To(Succeed())
			g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, meshv1.ConditionAvailable)).To(BeTrue(), "conditions: %+v", got.Status.Conditions)
			g.Expect(got.Status.ReadyNodes).To(Equal(mc.Spec.Replicas()))
			g.Expect(got.Status.Phase).To(Equal(meshv1.PhaseRunning))
		}, 120*time.Second, time.Second).Should(Succeed())

		pods := &corev1.PodList{}
		Expect(c.client.List(ctx, pods, client.InNamespace("apps"), client.MatchingLabels{"app.kubernetes.io/instance": mc.Name})).To(Succeed())
		Expect(pods.Items).To(HaveLen(int(mc.Spec.Replicas())))
		for _, p := range pods.Items {
			Expect(p.Status.Phase).To(Equal(corev1.PodRunning), p.Name)
		}
	})
})
