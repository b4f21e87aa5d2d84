package install_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/resources"
)

// generatedRules are the rules controller-gen generated from the
// controllers' RBAC markers.
func generatedRules() []rbacv1.PolicyRule {
	data, err := os.ReadFile(filepath.Join(repoRoot, "config", "rbac", "role.yaml"))
	Expect(err).NotTo(HaveOccurred())
	role := &rbacv1.ClusterRole{}
	Expect(yaml.UnmarshalStrict(data, role)).To(Succeed())
	Expect(role.Rules).NotTo(BeEmpty())
	return role.Rules
}

func readFile(parts ...string) string {
	data, err := os.ReadFile(filepath.Join(parts...))
	Expect(err).NotTo(HaveOccurred())
	return string(data)
}

// makeVar reads `NAME ?= value` from the Makefile.
func makeVar(name string) string {
	m := regexp.MustCompile(`(?m)^` + name + ` \?= (\S+)$`).FindStringSubmatch(readFile(repoRoot, "Makefile"))
	Expect(m).NotTo(BeNil(), "Makefile variable %s", name)
	return m[1]
}

var _ = Describe("the chart stays in sync with what is generated and built", func() {
	It("carries the CRDs of config/crd/bases byte for byte (make chart-sync)", func() {
		generated, err := filepath.Glob(filepath.Join(repoRoot, "config", "crd", "bases", "*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		copied, err := filepath.Glob(filepath.Join(chartDir, "files", "crds", "*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(len(copied)).To(Equal(len(generated)), "run make chart-sync")
		for _, g := range generated {
			Expect(readFile(chartDir, "files", "crds", filepath.Base(g))).To(Equal(readFile(g)),
				"%s drifted from the chart's copy: run make chart-sync", g)
		}
	})

	It("carries the generated RBAC role byte for byte (make chart-sync)", func() {
		Expect(readFile(chartDir, "files", "role.yaml")).To(Equal(readFile(repoRoot, "config", "rbac", "role.yaml")),
			"config/rbac/role.yaml drifted from the chart's copy: run make chart-sync")
	})

	It("renders the CRD unchanged but for Helm's labels and the keep policy", func() {
		docs := helmTemplate()
		var rendered *apiextensionsv1.CustomResourceDefinition
		for _, d := range docs {
			if d.kind == "CustomResourceDefinition" {
				rendered = &apiextensionsv1.CustomResourceDefinition{}
				Expect(yaml.UnmarshalStrict([]byte(d.text), rendered)).To(Succeed())
			}
		}
		Expect(rendered).NotTo(BeNil())
		want := &apiextensionsv1.CustomResourceDefinition{}
		Expect(yaml.UnmarshalStrict([]byte(readFile(repoRoot, "config", "crd", "bases", "mesh.purplerain.io_meshclusters.yaml")), want)).To(Succeed())
		Expect(rendered.Spec).To(Equal(want.Spec))
		Expect(rendered.Annotations).To(HaveKeyWithValue("helm.sh/resource-policy", "keep"))
	})

	It("ships an API reference generated from the current API types (make docs)", func() {
		cmd := exec.Command("go", "run", "./hack/refdocs", "-o", "docs/reference.md", "-check")
		cmd.Dir = repoRoot
		out, err := cmd.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "%s", out)
	})

	It("installs by default the images the Makefile builds", func() {
		version, registry := makeVar("VERSION"), makeVar("IMAGE_REGISTRY")
		chart := map[string]any{}
		Expect(yaml.Unmarshal([]byte(readFile(chartDir, "Chart.yaml")), &chart)).To(Succeed())
		Expect(chart["appVersion"]).To(Equal(version), "Chart.yaml appVersion is the default image tag")
		values := map[string]any{}
		Expect(yaml.Unmarshal([]byte(readFile(chartDir, "values.yaml")), &values)).To(Succeed())
		Expect(values["image"]).To(HaveKeyWithValue("repository", registry+"/mesh-operator"))
		Expect(readFile(repoRoot, "config", "manager", "manager.yaml")).To(ContainSubstring("image: " + registry + "/mesh-operator:" + version))
		Expect(meshv1.DefaultImage).To(Equal(registry + "/mesh-node:" + version))
	})

	It("puts each binary where the Deployment and the StatefulSet run it", func() {
		makefile := readFile(repoRoot, "Makefile")
		// The operator Deployment runs /manager.
		Expect(makefile).To(ContainSubstring("--file $(BIN)/static/manager:/manager --entrypoint /manager"))
		Expect(readFile(chartDir, "templates", "deployment.yaml")).To(ContainSubstring(`command: ["/manager"]`))
		Expect(readFile(repoRoot, "config", "manager", "manager.yaml")).To(ContainSubstring(`command: ["/manager"]`))
		// The node StatefulSet runs "mesh-node" from PATH, which the image
		// builder sets to /usr/local/bin:/usr/bin:/bin.
		Expect(makefile).To(ContainSubstring("--file $(BIN)/static/mesh-node:/usr/local/bin/mesh-node"))
		sts := resources.StatefulSet(&meshv1.MeshCluster{}, 1, "")
		Expect(sts.Spec.Template.Spec.Containers[0].Command).To(Equal([]string{"mesh-node"}))
		// The Dockerfile builds the same layout, on the Go of go.mod.
		dockerfile := readFile(repoRoot, "Dockerfile")
		Expect(dockerfile).To(ContainSubstring("COPY --from=build /out/manager /manager"))
		Expect(dockerfile).To(ContainSubstring("COPY --from=build /out/mesh-node /usr/local/bin/mesh-node"))
		Expect(dockerfile).To(ContainSubstring("USER 65532:65532"))
		goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(readFile(repoRoot, "go.mod"))
		Expect(goVersion).NotTo(BeNil())
		Expect(dockerfile).To(ContainSubstring("ARG GO_VERSION=" + goVersion[1]))
	})
})
