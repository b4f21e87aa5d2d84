package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/purplerain/mesh-operator/hack/localcluster/kubelet"
)

// ErrPortTaken is returned when a fixed port of the control plane is in
// use.
var ErrPortTaken = errors.New("port taken")

// Controllers are the kube-controller-manager controllers the local
// cluster runs.
var Controllers = []string{
	"statefulset-controller", "garbage-collector-controller",
	"persistentvolumeclaim-protection-controller", "persistentvolume-protection-controller",
	"persistentvolume-binder-controller",
	"endpoints-controller", "endpointslice-controller",
	"replicaset-controller", "deployment-controller", "disruption-controller",
	"namespace-controller", "serviceaccount-controller", "serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller",
}

// Options configures a local cluster.
type Options struct {
	// StateDir receives the kubeconfig, logs and kubelet directories.
	StateDir string
	// AssetsDir holds etcd, kube-apiserver and kube-controller-manager.
	AssetsDir string
	// APIServerPort and EtcdPort on 127.0.0.1; 0 picks free ports.
	APIServerPort, EtcdPort int
	// CRDDirs are installed before Start returns.
	CRDDirs []string
	// Images maps container images to local binaries.
	Images kubelet.ImageMap
	// PodIPFirst..PodIPLast is the pod address range (default
	// 127.0.0.10-127.0.0.250).
	PodIPFirst, PodIPLast netip.Addr
	// Backoff between container restarts (default the kubelet's).
	Backoff kubelet.Backoff
	// NodeName of the process kubelet (default "local-node").
	NodeName string
	Log      *slog.Logger
}

// Cluster is a running local cluster.
type Cluster struct {
	opts        Options
	env         *envtest.Environment
	kcm         *exec.Cmd
	kcmDone     chan struct{}
	stopKubelet context.CancelFunc
	kubeletDone chan error
	logFiles    []*os.File
	stopOnce    sync.Once

	// Kubeconfig is the path of the admin kubeconfig.
	Kubeconfig string
	// Config is the admin REST config.
	Config *rest.Config
	// LogDir holds every component's and pod's log.
	LogDir string
}

// Start starts the control plane and the kubelet. On error everything
// started is stopped again.
func Start(ctx context.Context, o Options) (c *Cluster, err error) {
	if o.NodeName == "" {
		o.NodeName = "local-node"
	}
	if !o.PodIPFirst.IsValid() {
		o.PodIPFirst, o.PodIPLast = netip.MustParseAddr("127.0.0.10"), netip.MustParseAddr("127.0.0.250")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	for _, p := range []int{o.APIServerPort, o.EtcdPort} {
		if p != 0 && !portFree(p) {
			return nil, fmt.Errorf("%w: 127.0.0.1:%d is in use (another local cluster? run `localcluster down`, or choose other ports)", ErrPortTaken, p)
		}
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		if _, err := os.Stat(filepath.Join(o.AssetsDir, b)); err != nil {
			return nil, fmt.Errorf("%s not found in %s: build it with `make k8s-binaries`: %w", b, o.AssetsDir, err)
		}
	}
	c = &Cluster{opts: o, LogDir: filepath.Join(o.StateDir, "logs"), Kubeconfig: filepath.Join(o.StateDir, "kubeconfig")}
	if err := os.MkdirAll(c.LogDir, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = c.Stop()
			c = nil
		}
	}()
	if err := c.startControlPlane(); err != nil {
		return c, err
	}
	// Recorded at once (and again below): etcd and kube-apiserver outlive
	// a process that is killed without cleaning up.
	if err := recordChildren(o.StateDir); err != nil {
		return c, fmt.Errorf("record processes: %w", err)
	}
	if err := c.startControllerManager(); err != nil {
		return c, err
	}
	if err := recordChildren(o.StateDir); err != nil {
		return c, fmt.Errorf("record processes: %w", err)
	}
	if err := c.startKubelet(); err != nil {
		return c, err
	}
	return c, nil
}

func portFree(p int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		return false
	}
	_ = ln.Close()
	return true
}

func (c *Cluster) logFile(name string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(c.LogDir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	c.logFiles = append(c.logFiles, f)
	return f, nil
}

func (c *Cluster) startControlPlane() error {
	etcdLog, err := c.logFile("etcd.log")
	if err != nil {
		return err
	}
	apiLog, err := c.logFile("kube-apiserver.log")
	if err != nil {
		return err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: c.opts.AssetsDir,
		CRDDirectoryPaths:     c.opts.CRDDirs,
		ErrorIfCRDPathMissing: len(c.opts.CRDDirs) > 0,
	}
	etcd := &envtest.Etcd{}
	env.ControlPlane.Etcd = etcd
	etcd.Out, etcd.Err = etcdLog, etcdLog
	etcd.StartTimeout = time.Minute
	if c.opts.EtcdPort != 0 {
		etcd.URL = &url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(c.opts.EtcdPort))}
	}
	api := &envtest.APIServer{}
	env.ControlPlane.APIServer = api
	api.Out, api.Err = apiLog, apiLog
	api.StartTimeout = time.Minute
	api.SecureServing.Address = "127.0.0.1"
	if c.opts.APIServerPort != 0 {
		api.SecureServing.Port = strconv.Itoa(c.opts.APIServerPort)
	}
	c.env = env
	c.opts.Log.Info("starting etcd and kube-apiserver", "assets", c.opts.AssetsDir)
	if _, err := env.Start(); err != nil {
		return fmt.Errorf("start control plane (logs in %s): %w", c.LogDir, err)
	}
	user, err := env.AddUser(envtest.User{Name: "local-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("create admin user: %w", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return err
	}
	if err := os.WriteFile(c.Kubeconfig, kc, 0o600); err != nil {
		return err
	}
	c.Config = user.Config()
	return os.WriteFile(filepath.Join(c.opts.StateDir, "ca.crt"), api.SecureServing.CA, 0o644)
}

func (c *Cluster) startControllerManager() error {
	logf, err := c.logFile("kube-controller-manager.log")
	if err != nil {
		return err
	}
	api := c.env.ControlPlane.APIServer
	c.kcm = exec.Command(filepath.Join(c.opts.AssetsDir, "kube-controller-manager"),
		"--kubeconfig="+c.Kubeconfig,
		"--controllers="+strings.Join(Controllers, ","),
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--service-account-private-key-file="+filepath.Join(api.CertDir, "sa-signer.key"),
		"--root-ca-file="+filepath.Join(c.opts.StateDir, "ca.crt"),
		"--concurrent-gc-syncs=5",
		"--concurrent-statefulset-syncs=5",
	)
	c.kcm.Stdout, c.kcm.Stderr = logf, logf
	c.kcm.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.kcm.Start(); err != nil {
		return fmt.Errorf("start kube-controller-manager: %w", err)
	}
	c.kcmDone = make(chan struct{})
	go func() { _ = c.kcm.Wait(); close(c.kcmDone) }()
	c.opts.Log.Info("kube-controller-manager started", "pid", c.kcm.Process.Pid, "controllers", len(Controllers))
	return nil
}

func (c *Cluster) startKubelet() error {
	logf, err := c.logFile("kubelet.log")
	if err != nil {
		return err
	}
	// The kubelet writes a status per container change; client-go's
	// default 5 QPS would make pods look slow to become ready.
	kcfg := rest.CopyConfig(c.Config)
	kcfg.QPS, kcfg.Burst = 200, 400
	cs, err := kubernetes.NewForConfig(kcfg)
	if err != nil {
		return err
	}
	ips, err := kubelet.NewIPPool(c.opts.PodIPFirst, c.opts.PodIPLast)
	if err != nil {
		return err
	}
	k, err := kubelet.New(kubelet.Config{
		NodeName:              c.opts.NodeName,
		Client:                cs,
		Images:                c.opts.Images,
		RootDir:               filepath.Join(c.opts.StateDir, "kubelet"),
		LogDir:                c.LogDir,
		IPs:                   ips,
		Backoff:               c.opts.Backoff,
		RewriteConfigMapPaths: true,
		ProvisionVolumes:      true,
		Log:                   slog.New(slog.NewTextHandler(io.MultiWriter(logf), nil)),
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.stopKubelet = cancel
	c.kubeletDone = make(chan error, 1)
	go func() { c.kubeletDone <- k.Run(ctx) }()
	c.opts.Log.Info("process kubelet started", "node", c.opts.NodeName, "pods", c.opts.PodIPFirst.String()+"-"+c.opts.PodIPLast.String())
	return nil
}

// Stop stops the kubelet and its pods, the controller manager, the API
// server and etcd. The logs stay in LogDir.
func (c *Cluster) Stop() error {
	var errs []error
	c.stopOnce.Do(func() {
		if c.stopKubelet != nil {
			c.stopKubelet()
			if err := <-c.kubeletDone; err != nil {
				errs = append(errs, fmt.Errorf("kubelet: %w", err))
			}
		}
		if c.kcm != nil && c.kcm.Process != nil {
			_ = c.kcm.Process.Signal(syscall.SIGTERM)
			select {
			case <-c.kcmDone:
			case <-time.After(10 * time.Second):
				_ = c.kcm.Process.Kill()
				<-c.kcmDone
			}
		}
		if c.env != nil {
			if err := c.env.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("control plane: %w", err))
			}
		}
		for _, f := range c.logFiles {
			_ = f.Close()
		}
		_ = os.Remove(PIDFile(c.opts.StateDir))
	})
	return errors.Join(errs...)
}
