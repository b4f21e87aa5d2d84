package install_test

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

const repoRoot = "../.."

var (
	scheme     = runtime.NewScheme()
	helmBin    string
	kubectlBin string
	managerBin string
	chartDir   = filepath.Join(repoRoot, "charts", "mesh-operator")
)

func TestInstall(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Install: Helm chart and kustomize (envtest)")
}

var _ = BeforeSuite(func() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(meshv1.AddToScheme(scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(scheme))

	helmBin = os.Getenv("HELM")
	if helmBin == "" {
		helmBin = filepath.Join(repoRoot, "bin", "helm")
	}
	var err error
	helmBin, err = filepath.Abs(helmBin)
	Expect(err).NotTo(HaveOccurred())
	Expect(helmBin).To(BeAnExistingFile(), "helm is built by `make tools` into bin/helm (or set HELM)")

	kubectlBin = os.Getenv("KUBECTL")
	if kubectlBin == "" {
		kubectlBin, err = exec.LookPath("kubectl")
		Expect(err).NotTo(HaveOccurred(), "kubectl must be on PATH (or set KUBECTL)")
	}

	// The operator runs as the real manager binary, with the arguments the
	// installed Deployment gives it.
	managerBin = filepath.Join(GinkgoT().TempDir(), "manager")
	build := exec.Command("go", "build", "-o", managerBin, "./cmd/manager")
	build.Dir = repoRoot
	out, err := build.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))
})
