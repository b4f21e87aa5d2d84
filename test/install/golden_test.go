package install_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// renderedDoc is one object of `helm template` output.
type renderedDoc struct {
	kind string
	text string
}

var kindLine = regexp.MustCompile(`(?m)^kind: (\S+)$`)

// helmTemplate renders the chart as release mesh-operator in namespace
// mesh-system with the extra arguments.
func helmTemplate(args ...string) []renderedDoc {
	out, err := helmTemplateRaw(args...)
	Expect(err).NotTo(HaveOccurred(), out)
	var docs []renderedDoc
	for _, d := range strings.Split(out, "\n---\n") {
		d = strings.TrimPrefix(strings.TrimSpace(d), "---\n")
		if d == "" {
			continue
		}
		m := kindLine.FindStringSubmatch(d)
		Expect(m).NotTo(BeNil(), "a rendered document without kind:\n%s", d)
		docs = append(docs, renderedDoc{kind: m[1], text: d})
	}
	return docs
}

func helmTemplateRaw(args ...string) (string, error) {
	cmd := exec.Command(helmBin, append([]string{"template", "mesh-operator", chartDir, "--namespace", "mesh-system"}, args...)...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+GinkgoT().TempDir(), "HELM_CONFIG_HOME="+GinkgoT().TempDir())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

var _ = Describe("helm template", func() {
	// Each case renders with testdata/values/<name>.yaml; the output, less
	// the CRD (checked against config/crd/bases on its own), must equal
	// testdata/golden/<name>.yaml. `go test ./test/install -update`
	// rewrites the golden files; review the diff before committing.
	DescribeTable("matches the golden file",
		func(name string, extra ...string) {
			docs := helmTemplate(append([]string{"-f", filepath.Join("testdata", "values", name+".yaml")}, extra...)...)
			var b strings.Builder
			for _, d := range docs {
				if d.kind == "CustomResourceDefinition" {
					continue
				}
				b.WriteString("---\n" + d.text + "\n")
			}
			golden := filepath.Join("testdata", "golden", name+".yaml")
			if *update {
				Expect(os.WriteFile(golden, []byte(b.String()), 0o644)).To(Succeed())
			}
			want, err := os.ReadFile(golden)
			Expect(err).NotTo(HaveOccurred(), "run go test ./test/install -update to create it")
			Expect(b.String()).To(Equal(string(want)), "helm template output changed: if intended, run go test ./test/install -update and review the diff")
		},
		Entry("defaults", "defaults"),
		Entry("namespace-scoped", "namespaced"),
		Entry("no leader election, no metrics, no CRD", "minimal"),
		Entry("ServiceMonitor", "servicemonitor", "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"),
		Entry("custom image, service account and scheduling", "custom"),
	)

	DescribeTable("refuses bad values with a message naming the problem",
		func(set, message string, extra ...string) {
			out, err := helmTemplateRaw(append([]string{"--set", set}, extra...)...)
			Expect(err).To(HaveOccurred(), out)
			Expect(out).To(ContainSubstring(message))
		},
		Entry("misspelt key", "watchNamespace[0]=a", "additional properties 'watchNamespace' not allowed"),
		Entry("no replica", "replicas=0", "at '/replicas': minimum: got 0, want 1"),
		Entry("boolean as string", "leaderElection.enabled=yes", "at '/leaderElection/enabled': got string, want boolean"),
		Entry("unknown log level", "logLevel=verbose", "value must be one of 'debug', 'info', 'error'"),
		Entry("port out of range", "metrics.port=70000", "at '/metrics/port': maximum"),
		Entry("unknown pull policy", "image.pullPolicy=Sometimes", "value must be one of 'Always', 'IfNotPresent', 'Never'"),
		Entry("bad CPU quantity", "resources.requests.cpu=lots", "at '/resources/requests/cpu'"),
		Entry("invalid namespace name", "watchNamespaces[0]=Team_A", "at '/watchNamespaces/0'"),
		Entry("two replicas without leader election", "replicas=2", "replicas > 1 needs leaderElection.enabled", "--set", "leaderElection.enabled=false"),
		Entry("ServiceMonitor without its CRD", "metrics.serviceMonitor.enabled=true", "needs the Prometheus Operator's ServiceMonitor CRD"),
		Entry("ServiceMonitor without metrics", "metrics.serviceMonitor.enabled=true", "needs metrics.enabled", "--set", "metrics.enabled=false"),
	)

	It("passes helm lint --strict", func() {
		cmd := exec.Command(helmBin, "lint", "--strict", chartDir)
		out, err := cmd.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(string(out)).To(ContainSubstring("0 chart(s) failed"))
	})
})
