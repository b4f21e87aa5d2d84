package kubelet

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// startAPIServer runs etcd and kube-apiserver from KUBEBUILDER_ASSETS (or
// the repository's bin/k8s) for one test.
func startAPIServer(t *testing.T) kubernetes.Interface {
	t.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		_, file, _, _ := runtime.Caller(0)
		assets = filepath.Join(filepath.Dir(file), "..", "..", "..", "bin", "k8s", "v1.37.2")
	}
	if _, err := os.Stat(filepath.Join(assets, "kube-apiserver")); err != nil {
		t.Fatalf("kube-apiserver not found in %s (run `make k8s-binaries` or set KUBEBUILDER_ASSETS): %v", assets, err)
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	cfg.QPS, cfg.Burst = 100, 200
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func eventually(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %s", what, detail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestKubeletRunsAPodEndToEnd pins the chain against a real API server:
// the node registers Ready, a pending pod is bound, its process runs on
// its own loopback address with resolved env and rewritten mount paths,
// readiness reaches the pod status, a ConfigMap change reaches the file,
// and a delete stops the process with SIGTERM before the object goes.
func TestKubeletRunsAPodEndToEnd(t *testing.T) {
	cs := startAPIServer(t)
	ctx := context.Background()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	root, logs := t.TempDir(), t.TempDir()
	ips, err := NewIPPool(netip.MustParseAddr("127.0.8.200"), netip.MustParseAddr("127.0.8.220"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := New(Config{
		NodeName: "test-node", Client: cs, Images: ImageMap{"example.com/helper": self},
		RootDir: root, LogDir: logs, IPs: ips, RewriteConfigMapPaths: true,
		Backoff:      Backoff{Initial: time.Second, Max: time.Second, Reset: time.Minute},
		VolumeResync: 500 * time.Millisecond,
		Log:          slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	kctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- k.Run(kctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})

	eventually(t, "node Ready without the not-ready taint", 30*time.Second, func() (bool, string) {
		n, err := cs.CoreV1().Nodes().Get(ctx, "test-node", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return len(n.Spec.Taints) == 0, "taints " + n.String()
			}
		}
		return false, "no Ready condition"
	})
	eventually(t, "node lease", 30*time.Second, func() (bool, string) {
		l, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, "test-node", metav1.GetOptions{})
		return err == nil && l.Spec.RenewTime != nil, errString(err)
	})

	port := freePort(t)
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "default"},
		Data:       map[string]string{"app.conf": "data_dir=/data\n"},
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "helper", Namespace: "default"},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptrTo[int64](20),
			Containers: []corev1.Container{{
				Name:    "main",
				Image:   "example.com/helper:v1",
				Command: []string{"helper"},
				Args:    []string{"--config=/etc/app/app.conf", "--name=$(POD_NAME)"},
				Env: []corev1.EnvVar{
					{Name: helperEnv, Value: "serve"},
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
					{Name: "PORT", Value: strconv.Itoa(port)},
					{Name: "OUT", Value: "/data/out.txt"},
					{Name: "READY_FILE", Value: "/etc/app/app.conf"},
				},
				Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: int32(port)}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("admin")}},
					PeriodSeconds: 1,
				},
				VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/app"}, {Name: "data", MountPath: "/data"}},
			}},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app"}}}},
				{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
		},
	}
	if pod, err = cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	var got *corev1.Pod
	eventually(t, "pod bound, running and Ready", 30*time.Second, func() (bool, string) {
		got, err = cs.CoreV1().Pods("default").Get(ctx, "helper", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		ready := false
		for _, c := range got.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		return ready && got.Spec.NodeName == "test-node" && got.Status.Phase == corev1.PodRunning, got.Status.String()
	})
	ip := got.Status.PodIP
	if !strings.HasPrefix(ip, "127.0.8.2") {
		t.Errorf("pod IP %q is not from the pool", ip)
	}
	if cs := got.Status.ContainerStatuses; len(cs) != 1 || !cs[0].Ready || cs[0].State.Running == nil || !strings.HasPrefix(cs[0].ContainerID, "process://") {
		t.Errorf("container statuses = %+v", cs)
	}

	// The process wrote its args and env into the emptyDir: mount paths are
	// rewritten, $(VAR) expanded, the downward API resolved.
	dataDir := filepath.Join(root, "pods", string(pod.UID), "volumes", "data")
	out, err := os.ReadFile(filepath.Join(dataDir, "out.txt"))
	if err != nil {
		t.Fatal(err)
	}
	cfgDir := filepath.Join(root, "pods", string(pod.UID), "volumes", "config")
	for _, want := range []string{"--config=" + cfgDir + "/app.conf", "--name=helper", "POD_IP=" + ip, "POD_NAME=helper", "OUT=" + dataDir + "/out.txt"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("process args/env lack %q:\n%s", want, out)
		}
	}
	conf, err := os.ReadFile(filepath.Join(cfgDir, "app.conf"))
	if err != nil || string(conf) != "data_dir="+dataDir+"\n" {
		t.Errorf("app.conf = %q (%v): want the mount path rewritten to %s", conf, err, dataDir)
	}

	cm.Data["app.conf"] = "data_dir=/elsewhere\n"
	if _, err := cs.CoreV1().ConfigMaps("default").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ConfigMap change materialised", 30*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(filepath.Join(cfgDir, "app.conf"))
		return string(b) == "data_dir=/elsewhere\n", string(b)
	})

	pid := 0
	if _, err := fmtSscan(strings.TrimPrefix(got.Status.ContainerStatuses[0].ContainerID, "process://"), &pid); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().Pods("default").Delete(ctx, "helper", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pod object removed after its process stopped", 30*time.Second, func() (bool, string) {
		_, err := cs.CoreV1().Pods("default").Get(ctx, "helper", metav1.GetOptions{})
		return apierrors.IsNotFound(err), "still there"
	})
	if processAlive(pid) {
		t.Errorf("process %d still runs after its pod was removed", pid)
	}
	logText, _ := os.ReadFile(filepath.Join(logs, "default_helper_main.log"))
	if !strings.Contains(string(logText), "got SIGTERM") || !strings.Contains(string(logText), "exited with code 0") {
		t.Errorf("log does not show a SIGTERM stop:\n%s", logText)
	}
	if _, err := os.Stat(filepath.Join(root, "pods", string(pod.UID))); !os.IsNotExist(err) {
		t.Errorf("pod directory left behind: %v", err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
