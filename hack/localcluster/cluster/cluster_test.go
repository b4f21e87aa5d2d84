package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/goleak"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/purplerain/mesh-operator/hack/localcluster/kubelet"
)

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard()) // envtest logs through it
	goleak.VerifyTestMain(m,
		// klog's flush daemon and client-go's connection and watch
		// machinery outlive a stopped cluster (as in package kubelet).
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		goleak.IgnoreAnyFunction("k8s.io/client-go/util/workqueue.(*Typed[...]).updateUnfinishedWorkLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("sigs.k8s.io/controller-runtime/pkg/internal/testing/process.(*State).Start.func1"),
	)
}

func TestStartRefusesATakenPortBeforeStartingAnything(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	state := t.TempDir()
	for name, o := range map[string]Options{
		"apiserver": {StateDir: state, AssetsDir: state, APIServerPort: port},
		"etcd":      {StateDir: state, AssetsDir: state, EtcdPort: port},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := Start(context.Background(), o)
			if !errors.Is(err, ErrPortTaken) || c != nil {
				t.Fatalf("Start = %v, %v; want ErrPortTaken", c, err)
			}
			if _, err := os.Stat(filepath.Join(state, "logs")); !os.IsNotExist(err) {
				t.Errorf("Start created state before refusing: %v", err)
			}
		})
	}
}

func TestStartNamesMissingBinaries(t *testing.T) {
	_, err := Start(context.Background(), Options{StateDir: t.TempDir(), AssetsDir: t.TempDir()})
	if err == nil {
		t.Fatal("Start succeeded without binaries")
	}
	if want := "make k8s-binaries"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say how to build the binaries (%q)", err, want)
	}
}

// assets is the directory of the source-built control plane binaries.
func assets(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), "..", "..", "..", "bin", "k8s", "v1.37.2")
	}
	if _, err := os.Stat(filepath.Join(dir, "kube-apiserver")); err != nil {
		t.Fatalf("kube-apiserver not found in %s (run `make k8s-binaries` or set KUBEBUILDER_ASSETS): %v", dir, err)
	}
	return dir
}

// TestPodServiceAccountTokenAndCAReachTheAPIServer runs the whole local
// cluster and a pod with the volume ServiceAccount admission gives pods in
// a real cluster (kube-api-access-*): the token the kubelet got from the
// TokenRequest API and the CA the controller manager published in
// kube-root-ca.crt authenticate the pod to the API server over verified
// TLS. Stop then leaves none of the processes running.
func TestPodServiceAccountTokenAndCAReachTheAPIServer(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary:", err)
	}
	state := t.TempDir()
	ctx := context.Background()
	c, err := Start(ctx, Options{
		StateDir: state, AssetsDir: assets(t),
		Images:     kubelet.ImageMap{"example.com/sleep": sleep},
		PodIPFirst: netip.MustParseAddr("127.0.8.100"), PodIPLast: netip.MustParseAddr("127.0.8.120"),
		Backoff: kubelet.Backoff{Initial: time.Second, Max: time.Second, Reset: time.Minute},
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = c.Stop()
		}
	}()
	recorded := recordedPIDs(t, state)
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	exp := int64(3607)
	pod, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "api-client", Namespace: "default"},
		Spec: corev1.PodSpec{
			ServiceAccountName:            "default", // the ServiceAccount admission plugin, off here, would set it
			TerminationGracePeriodSeconds: ptr(int64(1)),
			Containers: []corev1.Container{{
				Name: "main", Image: "example.com/sleep", Command: []string{"sleep"}, Args: []string{"3600"},
				VolumeMounts: []corev1.VolumeMount{{Name: "kube-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"}},
			}},
			Volumes: []corev1.Volume{{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &exp}},
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
						Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
					{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
						{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}},
					}}},
				},
			}}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var running *corev1.Pod
	deadline := time.Now().Add(2 * time.Minute)
	for {
		running, err = cs.CoreV1().Pods("default").Get(ctx, pod.Name, metav1.GetOptions{})
		if err == nil && running.Status.Phase == corev1.PodRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod not running: %v %+v", err, running.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	vol := filepath.Join(state, "kubelet", "pods", string(pod.UID), "volumes", "kube-api-access")
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(vol, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if ns := string(read("namespace")); ns != "default" {
		t.Errorf("namespace file = %q", ns)
	}
	asPod, err := kubernetes.NewForConfig(&rest.Config{
		Host: c.Config.Host, BearerToken: string(read("token")),
		TLSClientConfig: rest.TLSClientConfig{CAData: read("ca.crt")},
	})
	if err != nil {
		t.Fatal(err)
	}
	who, err := asPod.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("the pod's token and CA do not reach the API server: %v", err)
	}
	if u := who.Status.UserInfo.Username; u != "system:serviceaccount:default:default" {
		t.Errorf("the pod's token authenticates as %q", u)
	}

	var podPID int
	if _, err := fmt.Sscanf(running.Status.ContainerStatuses[0].ContainerID, "process://%d", &podPID); err != nil {
		t.Fatalf("container id %q: %v", running.Status.ContainerStatuses[0].ContainerID, err)
	}
	stopped = true
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range append(recorded, podPID, c.kcm.Process.Pid) {
		if alive(pid) {
			t.Errorf("process %d still runs after Stop", pid)
		}
	}
}

func recordedPIDs(t *testing.T, state string) []int {
	t.Helper()
	b, err := os.ReadFile(PIDFile(state))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		var pid int
		if _, err := fmt.Sscanf(line, "%d ", &pid); err == nil {
			pids = append(pids, pid)
		}
	}
	if len(pids) < 3 {
		t.Fatalf("pid file lists %d processes, want etcd, kube-apiserver and kube-controller-manager:\n%s", len(pids), b)
	}
	return pids
}

// alive reports whether pid runs (a zombie counts as gone).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(st)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || len(s) < i+3 || s[i+2] != 'Z'
}

func ptr[T any](v T) *T { return &v }
