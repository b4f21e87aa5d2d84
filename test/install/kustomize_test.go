package install_test

import (
	"context"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
)

const (
	kustomizeNamespace = "mesh-operator-system"
	kustomizeSA        = "system:serviceaccount:" + kustomizeNamespace + ":mesh-operator"
)

var _ = Describe("kubectl apply -k config/default", Ordered, func() {
	var c *cluster
	ctx := context.Background()

	BeforeAll(func() { c = startCluster() })

	It("installs the operator with the generated RBAC", func() {
		_, err := c.run(kubectlBin, "apply", "-k", filepath.Join(repoRoot, "config", "default"))
		Expect(err).NotTo(HaveOccurred())
		_, err = c.run(kubectlBin, "wait", "--for=condition=Established", "--timeout=30s", "crd/meshclusters.mesh.purplerain.io")
		Expect(err).NotTo(HaveOccurred())

		role := &rbacv1.ClusterRole{}
		Expect(c.client.Get(ctx, client.ObjectKey{Name: "mesh-operator-manager"}, role)).To(Succeed())
		Expect(role.Rules).To(Equal(generatedRules()))
		dep := &appsv1.Deployment{}
		Expect(c.client.Get(ctx, client.ObjectKey{Namespace: kustomizeNamespace, Name: "mesh-operator"}, dep)).To(Succeed())
		Expect(dep.Spec.Template.Spec.ServiceAccountName).To(Equal("mesh-operator"))
	})

	It("accepts every sample with kubectl apply, and the operator reconciles each under its ServiceAccount", func() {
		dep := &appsv1.Deployment{}
		Expect(c.client.Get(ctx, client.ObjectKey{Namespace: kustomizeNamespace, Name: "mesh-operator"}, dep)).To(Succeed())
		startOperator(c.serviceAccountKubeconfig(kustomizeNamespace, "mesh-operator"), dep.Spec.Template.Spec.Containers[0].Args)

		files, err := filepath.Glob(filepath.Join(repoRoot, "config", "samples", "mesh_*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(len(files)).To(BeNumerically(">=", 6), "samples: the original, small, disk, JetStream, Redis, daemons")
		for _, f := range files {
			out, err := c.run(kubectlBin, "apply", "--namespace", "default", "-f", f)
			Expect(err).NotTo(HaveOccurred(), "kubectl apply -f %s: %s", f, out)
			Expect(out).To(ContainSubstring("created"))

			mc := sample(filepath.Base(f), "default")
			Expect(c.client.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())
			sts := expectChildren(c, mc)
			Expect(*sts.Spec.Replicas).To(Equal(mc.Spec.Replicas()), f)
			if mc.Spec.Storage.Mode == meshv1.StorageDisk {
				Expect(sts.Spec.VolumeClaimTemplates).To(HaveLen(1), "%s keeps its logs on a PVC", f)
			}
			if strings.Contains(f, "disk") {
				Expect(mc.Spec.Storage.Mode).To(Equal(meshv1.StorageDisk))
			}
			if a := mc.Spec.Adapter; a != nil && a.SecretRef != nil {
				Expect(sts.Spec.Template.Spec.Volumes).To(ContainElement(HaveField("Secret.SecretName", a.SecretRef.Name)))
			}
		}
		Eventually(func(g Gomega) {
			list := &appsv1.StatefulSetList{}
			g.Expect(c.client.List(ctx, list, client.InNamespace("default"))).To(Succeed())
			g.Expect(list.Items).To(HaveLen(len(files)))
		}, 10*time.Second).Should(Succeed())

		By("driving the operator through everything it does, with only the kustomize ServiceAccount's permissions")
		ensureNamespace(c, "apps")
		exerciseOperator(c, sample("mesh_daemons.yaml", "apps"))
		c.expectNothingForbidden(kustomizeSA)
		for _, r := range append(operatorRequests, leaderElectionRequests...) {
			Expect(c.allowedRequests(kustomizeSA)).To(HaveKey(r), "the operator was expected to %s", r)
		}
	})

	It("lets Helm adopt the CRD it installed, as docs/troubleshooting.md says", func() {
		out, err := c.run(helmBin, "install", "adopt", chartDir, "--namespace", "adopt-system", "--create-namespace")
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring("cannot be imported into the current release"))

		crd := "crd/meshclusters.mesh.purplerain.io"
		_, err = c.run(kubectlBin, "label", crd, "app.kubernetes.io/managed-by=Helm")
		Expect(err).NotTo(HaveOccurred())
		_, err = c.run(kubectlBin, "annotate", crd, "meta.helm.sh/release-name=adopt", "meta.helm.sh/release-namespace=adopt-system")
		Expect(err).NotTo(HaveOccurred())
		_, err = c.run(helmBin, "install", "adopt", chartDir, "--namespace", "adopt-system", "--create-namespace")
		Expect(err).NotTo(HaveOccurred())
	})
})
