package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.uber.org/goleak"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/hack/localcluster/cluster"
	"github.com/purplerain/mesh-operator/hack/localcluster/kubelet"
)

var (
	repoRoot  string
	artifacts string
	lc        *cluster.Cluster
	k8s       client.Client
	clientset kubernetes.Interface
	scheme    = k8sruntime.NewScheme()
	timings   *os.File
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	before := goleak.IgnoreCurrent()
	RunSpecs(t, "mesh-operator end to end (local cluster, process kubelet)")
	// The cluster, kubelet and clients ran in this process: nothing of
	// them may outlive the suite.
	goleak.VerifyNone(t,
		before,
		// Ginkgo leaves its own interrupt handler running after RunSpecs.
		goleak.IgnoreTopFunction("github.com/onsi/ginkgo/v2/internal/interrupt_handler.(*InterruptHandler).registerForInterrupts.func2"),
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
	)
}

var _ = BeforeSuite(func() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(meshv1.AddToScheme(scheme))
	ctrllog.SetLogger(zap.New(zap.WriteTo(GinkgoWriter))) // envtest logs through it
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))

	artifacts = os.Getenv("E2E_ARTIFACTS")
	if artifacts == "" {
		artifacts = filepath.Join(repoRoot, "tmp", "e2e", time.Now().UTC().Format("20060102T150405Z"))
	}
	Expect(os.MkdirAll(artifacts, 0o755)).To(Succeed())
	anyFailed = true // until BeforeSuite completes
	By("state and logs in " + artifacts)
	var err error
	timings, err = os.Create(filepath.Join(artifacts, "timings.txt"))
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		_ = timings.Close()
		if anyFailed {
			fmt.Fprintf(GinkgoWriter, "\nE2E FAILED: state and logs kept in %s (logs/: control plane, kubelet, manager, one file per pod)\n", artifacts)
			return
		}
		// A passing run keeps only its logs and timings.
		for _, d := range []string{"kubelet", "bin", "kubeconfig"} {
			_ = os.RemoveAll(filepath.Join(artifacts, d))
		}
	})

	bin := filepath.Join(artifacts, "bin")
	for name, pkg := range map[string]string{"manager": "./cmd/manager", "mesh-node": "./cmd/mesh-node"} {
		By("building " + name)
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, name), pkg)
		cmd.Dir = repoRoot
		out, err := cmd.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "go build %s: %s", pkg, out)
	}

	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(repoRoot, "bin", "k8s", "v1.37.2")
	}
	By("starting the local cluster")
	start := time.Now()
	lc, err = cluster.Start(context.Background(), cluster.Options{
		StateDir:  artifacts,
		AssetsDir: assets,
		CRDDirs:   []string{filepath.Join(repoRoot, "config", "crd", "bases")},
		Images:    kubelet.ImageMap{"ghcr.io/purplerain/mesh-node": filepath.Join(bin, "mesh-node")},
		Backoff:   kubelet.Backoff{Initial: time.Second, Max: 10 * time.Second, Reset: time.Minute},
	})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(lc.Stop()).To(Succeed()) })
	record("local cluster start", time.Since(start))

	k8s, err = client.New(lc.Config, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	clientset, err = kubernetes.NewForConfig(lc.Config)
	Expect(err).NotTo(HaveOccurred())

	By("starting the operator as a process")
	startOperator(filepath.Join(bin, "manager"))
	anyFailed = false
})

// anyFailed keeps the artifacts of a run in which something failed (or
// was interrupted).
var anyFailed bool

var _ = ReportAfterEach(func(r SpecReport) {
	if r.Failed() {
		anyFailed = true
	}
})

// startOperator runs cmd/manager against the local cluster; its log goes
// to logs/manager.log.
func startOperator(path string) {
	logf, err := os.Create(filepath.Join(lc.LogDir, "manager.log"))
	Expect(err).NotTo(HaveOccurred())
	cmd := exec.Command(path, "--leader-elect=false", "--metrics-bind-address=0", "--health-probe-bind-address=0")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+lc.Kubeconfig)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	Expect(cmd.Start()).To(Succeed())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	DeferCleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = logf.Close()
	})
}

// record prints a timing and keeps it in timings.txt.
func record(what string, d time.Duration) {
	line := fmt.Sprintf("%s: %s", what, d.Round(time.Millisecond))
	fmt.Fprintln(GinkgoWriter, "TIMING "+line)
	AddReportEntry("timing: "+what, d.Round(time.Millisecond).String())
	if timings != nil {
		fmt.Fprintln(timings, line)
	}
}

// kubectl runs kubectl against the local cluster.
func kubectl(args ...string) string {
	GinkgoHelper()
	cmd := exec.Command("kubectl", append([]string{"--kubeconfig=" + lc.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "kubectl %s: %s", strings.Join(args, " "), out)
	return string(out)
}
