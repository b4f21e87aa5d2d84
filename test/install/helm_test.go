package install_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/resources"
)

const (
	helmRelease   = "mesh-operator"
	helmNamespace = "mesh-system"
	helmSA        = "system:serviceaccount:" + helmNamespace + ":" + helmRelease
)

var _ = Describe("helm install and upgrade", Ordered, func() {
	var c *cluster
	ctx := context.Background()

	BeforeAll(func() {
		c = startCluster()
	})

	deploymentArgs := func() []string {
		dep := &appsv1.Deployment{}
		Expect(c.client.Get(ctx, client.ObjectKey{Namespace: helmNamespace, Name: helmRelease}, dep)).To(Succeed())
		return dep.Spec.Template.Spec.Containers[0].Args
	}

	It("installs the CRD, RBAC, ServiceAccount, Deployment and metrics Service", func() {
		_, err := c.run(helmBin, "install", helmRelease, chartDir, "--namespace", helmNamespace, "--create-namespace")
		Expect(err).NotTo(HaveOccurred())

		crd := &apiextensionsv1.CustomResourceDefinition{}
		Eventually(func(g Gomega) {
			g.Expect(c.client.Get(ctx, client.ObjectKey{Name: "meshclusters.mesh.purplerain.io"}, crd)).To(Succeed())
			g.Expect(crd.Status.Conditions).To(ContainElement(And(
				HaveField("Type", apiextensionsv1.Established), HaveField("Status", apiextensionsv1.ConditionTrue))))
		}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
		Expect(crd.Annotations).To(HaveKeyWithValue("helm.sh/resource-policy", "keep"))

		dep := &appsv1.Deployment{}
		Expect(c.client.Get(ctx, client.ObjectKey{Namespace: helmNamespace, Name: helmRelease}, dep)).To(Succeed())
		pod := dep.Spec.Template.Spec
		Expect(pod.ServiceAccountName).To(Equal(helmRelease))
		Expect(*pod.SecurityContext.RunAsNonRoot).To(BeTrue())
		Expect(string(pod.SecurityContext.SeccompProfile.Type)).To(Equal("RuntimeDefault"))
		ctr := pod.Containers[0]
		Expect(*ctr.SecurityContext.ReadOnlyRootFilesystem).To(BeTrue())
		Expect(*ctr.SecurityContext.AllowPrivilegeEscalation).To(BeFalse())
		Expect(ctr.LivenessProbe.HTTPGet.Path).To(Equal("/healthz"))
		Expect(ctr.ReadinessProbe.HTTPGet.Path).To(Equal("/readyz"))
		Expect(ctr.Args).To(ContainElements("--leader-elect=true", "--leader-election-namespace="+helmNamespace))

		role := &rbacv1.ClusterRole{}
		Expect(c.client.Get(ctx, client.ObjectKey{Name: helmRelease + "-manager"}, role)).To(Succeed())
		Expect(role.Rules).To(Equal(generatedRules()))
	})

	It("runs an operator that, with only the chart's ServiceAccount, does everything it does", func() {
		op := startOperator(c.serviceAccountKubeconfig(helmNamespace, helmRelease), deploymentArgs())
		ensureNamespace(c, "apps")
		exerciseOperator(c, sample("mesh_daemons.yaml", "apps"))

		Expect(httpBody("http://" + op.metricsAddr + "/metrics")).To(ContainSubstring(`controller_runtime_reconcile_total{controller="meshcluster"`))
		c.expectNothingForbidden(helmSA)
		for _, r := range append(operatorRequests, leaderElectionRequests...) {
			Expect(c.allowedRequests(helmSA)).To(HaveKey(r), "the operator was expected to %s", r)
		}
		Expect(op.logText()).NotTo(ContainSubstring("forbidden"))
		c.reportUnusedGrants(helmSA, generatedRules())
	})

	It("upgrades to a namespace-scoped install: Roles in the watched namespaces, no ClusterRole, and a newer CRD", func() {
		ensureNamespace(c, "team-a")
		ensureNamespace(c, "team-b")
		// A newer chart whose CRD changed: Helm never upgrades a chart's
		// crds/ directory, so the chart renders its CRD as a template.
		newer := filepath.Join(GinkgoT().TempDir(), "mesh-operator")
		Expect(os.CopyFS(newer, os.DirFS(chartDir))).To(Succeed())
		crdFile := filepath.Join(newer, "files", "crds", "mesh.purplerain.io_meshclusters.yaml")
		crdYAML, err := os.ReadFile(crdFile)
		Expect(err).NotTo(HaveOccurred())
		Expect(os.WriteFile(crdFile, bytes.Replace(crdYAML, []byte("controller-gen.kubebuilder.io/version: "), []byte("controller-gen.kubebuilder.io/version: newer-"), 1), 0o644)).To(Succeed())

		_, err = c.run(helmBin, "upgrade", helmRelease, newer, "--namespace", helmNamespace,
			"--reuse-values", "--set", "watchNamespaces={team-a}", "--set", "logLevel=debug")
		Expect(err).NotTo(HaveOccurred())

		Expect(deploymentArgs()).To(ContainElements("--namespace=team-a", "--zap-log-level=debug"))
		crd := &apiextensionsv1.CustomResourceDefinition{}
		Expect(c.client.Get(ctx, client.ObjectKey{Name: "meshclusters.mesh.purplerain.io"}, crd)).To(Succeed())
		Expect(crd.Annotations["controller-gen.kubebuilder.io/version"]).To(HavePrefix("newer-"), "helm upgrade must update the CRD")
		err = c.client.Get(ctx, client.ObjectKey{Name: helmRelease + "-manager"}, &rbacv1.ClusterRole{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the upgrade must remove the ClusterRole, got %v", err)
		role := &rbacv1.Role{}
		Expect(c.client.Get(ctx, client.ObjectKey{Namespace: "team-a", Name: helmRelease + "-manager"}, role)).To(Succeed())
		Expect(role.Rules).To(Equal(generatedRules()))
		err = c.client.Get(ctx, client.ObjectKey{Namespace: "team-b", Name: helmRelease + "-manager"}, &rbacv1.Role{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue())

		startOperator(c.serviceAccountKubeconfig(helmNamespace, helmRelease), deploymentArgs())
		inA := sample("mesh_daemons.yaml", "team-a")
		exerciseOperator(c, inA)
		inB := sample("mesh_small.yaml", "team-b")
		Expect(c.client.Create(ctx, inB)).To(Succeed())
		Consistently(func() bool {
			err := c.client.Get(ctx, client.ObjectKey{Namespace: "team-b", Name: resources.StatefulSetName(inB)}, &appsv1.StatefulSet{})
			return apierrors.IsNotFound(err)
		}, 3*time.Second, 250*time.Millisecond).Should(BeTrue(), "a namespace-scoped operator must leave other namespaces alone")
		c.expectNothingForbidden(helmSA)
	})

	It("uninstalls and keeps the CRD and the MeshClusters", func() {
		_, err := c.run(helmBin, "uninstall", helmRelease, "--namespace", helmNamespace)
		Expect(err).NotTo(HaveOccurred())
		err = c.client.Get(ctx, client.ObjectKey{Namespace: helmNamespace, Name: helmRelease}, &appsv1.Deployment{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue())
		Expect(c.client.Get(ctx, client.ObjectKey{Name: "meshclusters.mesh.purplerain.io"}, &apiextensionsv1.CustomResourceDefinition{})).To(Succeed())
		Expect(c.client.Get(ctx, client.ObjectKey{Namespace: "team-a", Name: "daemons"}, &meshv1.MeshCluster{})).To(Succeed())
	})
})
