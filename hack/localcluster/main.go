// Command localcluster runs the whole product on one machine: a local
// Kubernetes control plane built from source, a process kubelet as its
// node, and optionally the operator.
//
//	localcluster up [--detach] [--operator=bin/manager] [--image=repo=path]...
//	localcluster down
//	localcluster status
//	localcluster logs [-n namespace] [-f] <pod>|etcd|kube-apiserver|kube-controller-manager|kubelet|manager
//	localcluster kubeconfig
//
// State (kubeconfig, logs, pod directories) lives in --state-dir (default
// tmp/localcluster, or $LOCALCLUSTER_STATE). The logs directory is kept by
// `down`, so a failed run can be read afterwards; the next `up` starts a
// fresh cluster and appends to the logs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/purplerain/mesh-operator/hack/localcluster/cluster"
	"github.com/purplerain/mesh-operator/hack/localcluster/kubelet"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "up":
		err = up(args)
	case "down":
		err = down(args)
	case "status":
		err = status(args)
	case "logs":
		err = logs(args)
	case "kubeconfig":
		fs := stateFlags("kubeconfig")
		_ = fs.set.Parse(args)
		fmt.Println(filepath.Join(fs.dir(), "kubeconfig"))
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: localcluster up|down|status|logs|kubeconfig [flags]
  up          start etcd, kube-apiserver, kube-controller-manager, the process kubelet (and --operator)
  down        stop everything started by up
  status      say whether the cluster runs, list its nodes and pods
  logs POD    print a pod's logs (or etcd, kube-apiserver, kube-controller-manager, kubelet, manager)
  kubeconfig  print the kubeconfig path`)
}

type stateFlagSet struct {
	set   *flag.FlagSet
	state *string
}

func stateFlags(name string) stateFlagSet {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	def := os.Getenv("LOCALCLUSTER_STATE")
	if def == "" {
		def = "tmp/localcluster"
	}
	return stateFlagSet{set: fs, state: fs.String("state-dir", def, "state directory (kubeconfig, logs, pod directories)")}
}

func (s stateFlagSet) dir() string {
	d, err := filepath.Abs(*s.state)
	if err != nil {
		return *s.state
	}
	return d
}

type imageFlags []string

func (i *imageFlags) String() string     { return strings.Join(*i, ",") }
func (i *imageFlags) Set(v string) error { *i = append(*i, v); return nil }

func up(args []string) error {
	sf := stateFlags("up")
	fs := sf.set
	assets := fs.String("assets", "bin/k8s/v1.37.2", "directory with etcd, kube-apiserver and kube-controller-manager")
	apiPort := fs.Int("apiserver-port", 16443, "kube-apiserver port on 127.0.0.1 (0: any free port)")
	etcdPort := fs.Int("etcd-port", 12379, "etcd client port on 127.0.0.1 (0: any free port)")
	crds := fs.String("crd-dir", "config/crd/bases", "CRDs to install (empty: none)")
	operator := fs.String("operator", "", "operator binary to run against the cluster (empty: none)")
	backoff := fs.Duration("restart-backoff", 10*time.Second, "first container restart delay (doubles up to 5m)")
	podIPs := fs.String("pod-ips", "127.0.0.10-127.0.0.250", "pod address range first-last (loopback addresses)")
	detach := fs.Bool("detach", false, "run in the background and return once the cluster is ready")
	wait := fs.Duration("wait", 3*time.Minute, "with --detach: how long to wait for the cluster")
	var images imageFlags
	fs.Var(&images, "image", "image repository=binary (repeatable; default ghcr.io/purplerain/mesh-node=bin/mesh-node)")
	_ = fs.Parse(args)
	first, last, err := parseRange(*podIPs)
	if err != nil {
		return fmt.Errorf("--pod-ips: %w", err)
	}
	state := sf.dir()
	if err := os.MkdirAll(filepath.Join(state, "logs"), 0o755); err != nil {
		return err
	}
	if pid, ok := running(state); ok {
		return fmt.Errorf("a local cluster already runs (pid %d, state %s): run `localcluster down` first", pid, state)
	}
	if *detach {
		return upDetached(state, args, *wait)
	}

	imgs := kubelet.ImageMap{}
	if len(images) == 0 {
		images = imageFlags{"ghcr.io/purplerain/mesh-node=bin/mesh-node"}
	}
	for _, m := range images {
		repo, bin, err := kubelet.ParseImageMapping(m)
		if err != nil {
			return err
		}
		if bin, err = filepath.Abs(bin); err != nil {
			return err
		}
		imgs[repo] = bin
	}
	var crdDirs []string
	if *crds != "" {
		crdDirs = []string{*crds}
	}
	assetsDir, _ := filepath.Abs(*assets)
	_ = os.RemoveAll(filepath.Join(state, "kubelet")) // a fresh cluster: no stale pod directories
	for _, f := range []string{"kubeconfig", "ready"} {
		_ = os.Remove(filepath.Join(state, f))
	}
	if err := os.WriteFile(pidFile(state), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	defer os.Remove(pidFile(state))
	defer os.Remove(filepath.Join(state, "ready"))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctrllog.SetLogger(logr.FromSlogHandler(log.Handler())) // envtest logs through it
	start := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{
		StateDir: state, AssetsDir: assetsDir, APIServerPort: *apiPort, EtcdPort: *etcdPort,
		CRDDirs: crdDirs, Images: imgs, Log: log, PodIPFirst: first, PodIPLast: last,
		Backoff: kubelet.Backoff{Initial: *backoff, Max: 5 * time.Minute, Reset: 10 * time.Minute},
	})
	if err != nil {
		return err
	}
	defer func() {
		log.Info("stopping the local cluster")
		if err := c.Stop(); err != nil {
			log.Error("stop", "err", err)
		}
		log.Info("stopped; logs kept", "dir", c.LogDir)
	}()
	if *operator != "" {
		op, err := startOperator(*operator, c)
		if err != nil {
			return err
		}
		defer op.stop()
	}
	if err := os.WriteFile(filepath.Join(state, "ready"), nil, 0o644); err != nil {
		return err
	}
	log.Info("local cluster ready", "after", time.Since(start).Round(time.Millisecond), "kubeconfig", c.Kubeconfig, "logs", c.LogDir)
	<-ctx.Done()
	return nil
}

// parseRange parses "first-last".
func parseRange(s string) (first, last netip.Addr, err error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return first, last, fmt.Errorf("%q: want first-last, e.g. 127.0.0.10-127.0.0.250", s)
	}
	if first, err = netip.ParseAddr(a); err != nil {
		return first, last, err
	}
	if last, err = netip.ParseAddr(b); err != nil {
		return first, last, err
	}
	if !first.IsLoopback() || !last.IsLoopback() || last.Less(first) {
		return first, last, fmt.Errorf("%q: want loopback addresses, first before last", s)
	}
	return first, last, nil
}

type operatorProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startOperator(bin string, c *cluster.Cluster) (*operatorProc, error) {
	logf, err := os.OpenFile(filepath.Join(c.LogDir, "manager.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--leader-elect=false", "--metrics-bind-address=0", "--health-probe-bind-address=0")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("start operator %s: %w", bin, err)
	}
	p := &operatorProc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); _ = logf.Close(); close(p.done) }()
	return p, nil
}

func (p *operatorProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// upDetached starts `up` again in its own session with its output in
// logs/localcluster.log, and waits until it reports ready or exits.
func upDetached(state string, args []string, wait time.Duration) error {
	var rest []string
	for i := 0; i < len(args); i++ {
		a := strings.TrimPrefix(args[i], "-")
		switch {
		case a == "-detach" || a == "detach" || strings.HasPrefix(a, "-detach=") || strings.HasPrefix(a, "detach="):
		case a == "-state-dir" || a == "state-dir":
			i++ // and its value
		case strings.HasPrefix(a, "-state-dir=") || strings.HasPrefix(a, "state-dir="):
		default:
			rest = append(rest, args[i])
		}
	}
	logPath := filepath.Join(state, "logs", "localcluster.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	// The log is appended to across runs: show only this run's part.
	var from int64
	if info, err := logf.Stat(); err == nil {
		from = info.Size()
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, append([]string{"up", "--state-dir=" + state}, rest...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Ctrl-C while waiting must not leave a cluster starting in the
	// background (the child has its own session: the terminal's SIGINT
	// does not reach it).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	// stopStarting stops the child and waits for it (SIGKILL after 90 s,
	// and whatever it recorded starting).
	stopStarting := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(90 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			_, _ = cluster.KillRecorded(state, 10*time.Second)
		}
	}
	deadline := time.After(wait)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("local cluster exited during start (%v); its log:\n%s", err, tail(logPath, from, 30))
		case sig := <-sigs:
			stopStarting()
			return fmt.Errorf("%v: stopped the local cluster that was starting (logs in %s)", sig, filepath.Dir(logPath))
		case <-deadline:
			// Stopped before returning, as on Ctrl-C: a cluster still
			// shutting down would pass for a running one (its pid file)
			// with the next `up` or `make demo`.
			stopStarting()
			return fmt.Errorf("local cluster not ready after %s: stopped it; logs in %s", wait, filepath.Dir(logPath))
		case <-tick.C:
			if _, err := os.Stat(filepath.Join(state, "ready")); err == nil {
				fmt.Printf("local cluster running (pid %d); kubeconfig %s; logs %s\n", cmd.Process.Pid, filepath.Join(state, "kubeconfig"), filepath.Dir(logPath))
				return nil
			}
		}
	}
}

// tail returns the last n lines of path written after offset from.
func tail(path string, from int64, n int) string {
	b, _ := os.ReadFile(path)
	if from <= int64(len(b)) {
		b = b[from:]
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func pidFile(state string) string { return filepath.Join(state, "localcluster.pid") }

// running reports the pid of a live `up` for state.
func running(state string) (int, bool) {
	b, err := os.ReadFile(pidFile(state))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	if syscall.Kill(pid, 0) != nil {
		return pid, false
	}
	// The pid may have been reused: it is ours only if it runs `up`.
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	args := strings.Split(string(cmdline), "\x00")
	return pid, len(args) > 1 && args[1] == "up"
}

func down(args []string) error {
	sf := stateFlags("down")
	timeout := sf.set.Duration("timeout", 90*time.Second, "how long to wait for a clean stop before SIGKILL")
	_ = sf.set.Parse(args)
	state := sf.dir()
	pid, ok := running(state)
	if !ok {
		_ = os.Remove(pidFile(state))
		// A crashed `up` may have left etcd and kube-apiserver behind.
		left, err := cluster.KillRecorded(state, 10*time.Second)
		if len(left) > 0 {
			fmt.Printf("stopped %d processes left by a local cluster that did not shut down (pids %v)\n", len(left), left)
		} else {
			fmt.Println("no local cluster running for", state)
		}
		return err
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(*timeout)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			fmt.Printf("local cluster stopped; logs kept in %s\n", filepath.Join(state, "logs"))
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	_ = os.Remove(pidFile(state))
	left, _ := cluster.KillRecorded(state, 10*time.Second)
	return fmt.Errorf("local cluster (pid %d) did not stop within %s: killed it and %d processes it had started", pid, *timeout, len(left))
}

func status(args []string) error {
	sf := stateFlags("status")
	_ = sf.set.Parse(args)
	state := sf.dir()
	pid, ok := running(state)
	if !ok {
		fmt.Println("not running (state", state+")")
		return nil
	}
	kc := filepath.Join(state, "kubeconfig")
	fmt.Printf("running: pid %d\nkubeconfig: %s\nlogs: %s\n\n", pid, kc, filepath.Join(state, "logs"))
	cmd := exec.Command("kubectl", "--kubeconfig="+kc, "get", "nodes,pods", "-A", "-o", "wide")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}

func logs(args []string) error {
	sf := stateFlags("logs")
	ns := sf.set.String("n", "default", "namespace of the pod")
	follow := sf.set.Bool("f", false, "follow the log")
	_ = sf.set.Parse(args)
	if sf.set.NArg() != 1 {
		return errors.New("usage: localcluster logs [-n namespace] [-f] <pod>|etcd|kube-apiserver|kube-controller-manager|kubelet|manager|localcluster")
	}
	name := sf.set.Arg(0)
	dir := filepath.Join(sf.dir(), "logs")
	files, _ := filepath.Glob(filepath.Join(dir, *ns+"_"+name+"_*.log"))
	if len(files) == 0 {
		if _, err := os.Stat(filepath.Join(dir, name+".log")); err == nil {
			files = []string{filepath.Join(dir, name+".log")}
		}
	}
	if len(files) == 0 {
		return fmt.Errorf("no logs for %q in %s", name, dir)
	}
	targs := []string{"-n", "+1"}
	if *follow {
		targs = append(targs, "-F")
	}
	if len(files) > 1 {
		targs = append(targs, "-v")
	}
	cmd := exec.Command("tail", append(targs, files...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}
