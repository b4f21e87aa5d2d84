package controllers_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers"
)

// The suite runs against a real kube-apiserver and etcd built from source
// (hack/build-k8s.sh; KUBEBUILDER_ASSETS points at them) and, for garbage
// collection, a real kube-controller-manager running only its garbage
// collector. No StatefulSet controller runs: specs that need pod readiness
// set the StatefulSet's status themselves, as the controller would.

var (
	testEnv   *envtest.Environment
	cfg       *rest.Config
	k8sClient client.WithWatch
	scheme    = runtime.NewScheme()
	kcm       *exec.Cmd
	stopMgr   context.CancelFunc
	mgrDone   chan error
)

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "MeshCluster controller (envtest)")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true), zap.Level(zapcore.InfoLevel)))
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(meshv1.AddToScheme(scheme))

	assets := os.Getenv("KUBEBUILDER_ASSETS")
	Expect(assets).NotTo(BeEmpty(), "KUBEBUILDER_ASSETS must point at the source-built binaries: run `make test` (or hack/build-k8s.sh)")

	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	var err error
	cfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(testEnv.Stop()).To(Succeed()) })

	k8sClient, err = client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	startGarbageCollector(assets)
	startManager()
	DeferCleanup(stopManager)
})

// startManager runs the operator's controller in-process, as cmd/manager
// does.
func startManager() {
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		// A restarted operator registers the controller again.
		Controller: config.Controller{SkipNameValidation: ptrTo(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	leases := controllers.NewLeaseKeeper(ctrl.Log.WithName("leases"))
	Expect(mgr.Add(leases)).To(Succeed())
	Expect((&controllers.MeshClusterReconciler{
		Client:   mgr.GetClient(),
		Scheme:   mgr.GetScheme(),
		Recorder: mgr.GetEventRecorder("mesh-operator"),
		Leases:   leases,
	}).SetupWithManager(mgr)).To(Succeed())

	var ctx context.Context
	ctx, stopMgr = context.WithCancel(context.Background())
	mgrDone = make(chan error, 1)
	go func() {
		defer GinkgoRecover()
		mgrDone <- mgr.Start(ctx)
	}()
}

// stopManager stops the running operator (a restart is stopManager, then
// startManager: the new one knows only what the API server holds).
func stopManager() {
	stopMgr()
	Eventually(mgrDone, 30*time.Second).Should(Receive(BeNil()))
}

// startGarbageCollector runs the source-built kube-controller-manager with
// only its garbage collector, as a system:masters user of the envtest API
// server.
func startGarbageCollector(assets string) {
	user, err := testEnv.ControlPlane.AddUser(envtest.User{Name: "kube-controller-manager", Groups: []string{"system:masters"}}, nil)
	Expect(err).NotTo(HaveOccurred())
	kubeconfig, err := user.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	dir := GinkgoT().TempDir()
	kubeconfigPath := filepath.Join(dir, "kcm.kubeconfig")
	Expect(os.WriteFile(kubeconfigPath, kubeconfig, 0o600)).To(Succeed())
	logFile, err := os.Create(filepath.Join(dir, "kcm.log"))
	Expect(err).NotTo(HaveOccurred())

	kcm = exec.Command(filepath.Join(assets, "kube-controller-manager"),
		"--kubeconfig="+kubeconfigPath,
		"--controllers=garbagecollector",
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--concurrent-gc-syncs=5",
	)
	kcm.Stdout, kcm.Stderr = logFile, logFile
	kcm.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	Expect(kcm.Start()).To(Succeed())
	DeferCleanup(func() {
		_ = kcm.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- kcm.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = kcm.Process.Kill()
			<-done
		}
		if CurrentSpecReport().Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil {
				fmt.Fprintf(GinkgoWriter, "kube-controller-manager log:\n%s\n", b)
			}
		}
		_ = logFile.Close()
	})
}
