package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/purplerain/mesh-operator/hack/localcluster/cluster"
)

// mainEnv makes the test binary run main() (as the localcluster command).
const mainEnv = "LOCALCLUSTER_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) != "" {
		main()
		return
	}
	os.Exit(m.Run())
}

func assets(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), "..", "..", "bin", "k8s", "v1.37.2")
	}
	if _, err := os.Stat(filepath.Join(dir, "kube-apiserver")); err != nil {
		t.Fatalf("kube-apiserver not found in %s (run `make k8s-binaries` or set KUBEBUILDER_ASSETS): %v", dir, err)
	}
	return dir
}

// localcluster runs this test binary as `localcluster args...` in its own
// process group, as a shell runs a foreground job.
func localcluster(t *testing.T, out *bytes.Buffer, args ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

func waitFile(t *testing.T, path string, exited <-chan error, out *bytes.Buffer) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		select {
		case err := <-exited:
			t.Fatalf("localcluster exited (%v) before %s appeared:\n%s", err, path, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear:\n%s", path, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// descendants lists every process below pid.
func descendants(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 {
			pp, _ := strconv.Atoi(f[1])
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	var walk func(int)
	walk = func(p int) {
		for _, c := range children[p] {
			out = append(out, c)
			walk(c)
		}
	}
	walk(pid)
	return out
}

// alive reports whether pid runs (a zombie counts as gone).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z"
}

// TestCtrlCOnAForegroundUpStopsEverything starts `localcluster up` in the
// foreground with an operator and a running pod, presses Ctrl-C (SIGINT to
// the job's process group) and checks that no process it started is left,
// its pid files are gone and its API server port is free again. A second
// `up` on the same state directory is refused while the first runs.
func TestCtrlCOnAForegroundUpStopsEverything(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary:", err)
	}
	state := t.TempDir()
	operator := filepath.Join(t.TempDir(), "operator.sh")
	if err := os.WriteFile(operator, []byte("#!/bin/sh\nexec "+sleep+" 3600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := localcluster(t, &out, "up", "--state-dir="+state, "--assets="+assets(t),
		"--apiserver-port=0", "--etcd-port=0", "--crd-dir=", "--operator="+operator,
		"--image=example.com/sleep="+sleep, "--pod-ips=127.0.8.150-127.0.8.160", "--restart-backoff=1s")
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer stopUp(t, cmd, exited, state)
	waitFile(t, filepath.Join(state, "ready"), exited, &out)

	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(state, "kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "sleeper", Namespace: "default"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "main", Image: "example.com/sleep", Command: []string{"sleep"}, Args: []string{"3600"},
		}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	podPID := 0
	deadline := time.Now().Add(2 * time.Minute)
	for podPID == 0 {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "sleeper", metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) == 1 {
			_, _ = fmt.Sscanf(p.Status.ContainerStatuses[0].ContainerID, "process://%d", &podPID)
		}
		if time.Now().After(deadline) {
			kl, _ := os.ReadFile(filepath.Join(state, "logs", "kubelet.log"))
			t.Fatalf("pod not running: %v %+v\nkubelet.log:\n%s", err, p.Status.ContainerStatuses, kl)
		}
		time.Sleep(100 * time.Millisecond)
	}

	var again bytes.Buffer
	second := localcluster(t, &again, "up", "--state-dir="+state, "--assets="+assets(t), "--apiserver-port=0", "--etcd-port=0")
	if err := second.Wait(); err == nil || !strings.Contains(again.String(), "already runs") {
		t.Errorf("a second up on the same state: %v\n%s", err, again.String())
	}

	procs := descendants(cmd.Process.Pid)
	if len(procs) < 5 { // etcd, kube-apiserver, kube-controller-manager, the operator, the pod
		t.Fatalf("only %d processes below localcluster up: %v", len(procs), procs)
	}
	if !containsPID(procs, podPID) {
		t.Fatalf("the pod's process %d is not below localcluster up (%v)", podPID, procs)
	}
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(cfg.Host, "https://"))

	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the deferred stopUp
		if err != nil {
			t.Errorf("localcluster up exited with %v after Ctrl-C:\n%s", err, out.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("localcluster up did not stop after Ctrl-C:\n%s", out.String())
	}
	for _, p := range procs {
		if alive(p) {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
			t.Errorf("process %d (%s) still runs after Ctrl-C", p, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		}
	}
	for _, f := range []string{"localcluster.pid", "pids", "ready"} {
		if _, err := os.Stat(filepath.Join(state, f)); !os.IsNotExist(err) {
			t.Errorf("%s left in the state directory (%v)", f, err)
		}
	}
	if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port)); err != nil {
		t.Errorf("API server port %s still taken: %v", port, err)
	} else {
		_ = ln.Close()
	}
	if _, err := os.Stat(filepath.Join(state, "logs", "kube-apiserver.log")); err != nil {
		t.Errorf("logs not kept: %v", err)
	}
}

// stopUp makes sure a test's `up` leaves nothing behind, also when the
// test failed half-way: Ctrl-C, then SIGKILL and the recorded processes
// (etcd and kube-apiserver survive a SIGKILLed up).
func stopUp(t *testing.T, cmd *exec.Cmd, exited chan error, state string) {
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-exited:
	case <-time.After(time.Minute):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	if left, _ := cluster.KillRecorded(state, 10*time.Second); len(left) > 0 {
		t.Errorf("processes %v were left running", left)
	}
}

func containsPID(ps []int, p int) bool {
	for _, x := range ps {
		if x == p {
			return true
		}
	}
	return false
}

// TestUpRefusesATakenPortClearly: the refusal names the address and the
// way out, and nothing is started or left behind.
func TestUpRefusesATakenPortClearly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	for _, flag := range []string{"--apiserver-port", "--etcd-port", "--detach --apiserver-port"} {
		state := t.TempDir()
		// A detached up shows its child's log: only this run's part.
		if err := os.MkdirAll(filepath.Join(state, "logs"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(state, "logs", "localcluster.log"), []byte("an earlier run\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{"up", "--state-dir=" + state, "--assets=" + assets(t), "--apiserver-port=0", "--etcd-port=0"}
		args = append(args, strings.Fields(fmt.Sprintf("%s=%d", flag, port))...)
		var out bytes.Buffer
		cmd := localcluster(t, &out, args...)
		err := cmd.Wait()
		msg := out.String()
		if err == nil || !strings.Contains(msg, fmt.Sprintf("127.0.0.1:%d is in use", port)) || !strings.Contains(msg, "localcluster down") || strings.Contains(msg, "an earlier run") {
			t.Errorf("%s taken: exit %v, output:\n%s\nwant a refusal naming the address and `localcluster down` (and nothing of earlier runs)", flag, err, msg)
		}
		for _, f := range []string{"localcluster.pid", "pids", "kubeconfig"} {
			if _, err := os.Stat(filepath.Join(state, f)); !os.IsNotExist(err) {
				t.Errorf("%s taken: %s left behind (%v)", flag, f, err)
			}
		}
	}
}

func TestParseRange(t *testing.T) {
	first, last, err := parseRange("127.0.8.10-127.0.8.20")
	if err != nil || first.String() != "127.0.8.10" || last.String() != "127.0.8.20" {
		t.Errorf("parseRange = %v %v %v", first, last, err)
	}
	for _, bad := range []string{"127.0.8.10", "127.0.8.20-127.0.8.10", "10.0.0.1-10.0.0.9", "x-y"} {
		if _, _, err := parseRange(bad); err == nil {
			t.Errorf("parseRange(%q) accepted", bad)
		}
	}
}

// TestCtrlCWhileADetachedUpWaitsStopsTheStartingCluster: `up --detach`
// (what make demo runs) starts the cluster in its own session and waits
// for it; Ctrl-C during that wait stops the cluster being started instead
// of leaving it running in the background.
func TestCtrlCWhileADetachedUpWaitsStopsTheStartingCluster(t *testing.T) {
	state := t.TempDir()
	var out bytes.Buffer
	cmd := localcluster(t, &out, "up", "--detach", "--state-dir="+state, "--assets="+assets(t),
		"--apiserver-port=0", "--etcd-port=0", "--crd-dir=", "--pod-ips=127.0.8.161-127.0.8.170")
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waitFile(t, filepath.Join(state, "localcluster.pid"), exited, &out)
	b, err := os.ReadFile(filepath.Join(state, "localcluster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	child, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	defer func() {
		if alive(child) {
			_ = syscall.Kill(child, syscall.SIGTERM)
			for start := time.Now(); alive(child) && time.Since(start) < time.Minute; {
				time.Sleep(100 * time.Millisecond)
			}
		}
		if left, _ := cluster.KillRecorded(state, 10*time.Second); len(left) > 0 {
			t.Errorf("processes %v were left running", left)
		}
	}()
	// Let the child get into starting etcd and the API server.
	seen := map[int]bool{child: true}
	for start := time.Now(); time.Since(start) < 30*time.Second && len(descendants(child)) < 1; {
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range descendants(child) {
		seen[p] = true
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var waitErr error
wait:
	for {
		select {
		case waitErr = <-exited:
			break wait
		case <-tick.C:
			for _, p := range descendants(child) {
				seen[p] = true
			}
		case <-time.After(2 * time.Minute):
			t.Fatalf("up --detach did not return after Ctrl-C:\n%s", out.String())
		}
	}
	if waitErr == nil || !strings.Contains(out.String(), "stopped the local cluster that was starting") {
		t.Errorf("up --detach after Ctrl-C: %v\n%s", waitErr, out.String())
	}
	for p := range seen {
		if alive(p) {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
			t.Errorf("process %d (%s) still runs after Ctrl-C", p, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		}
	}
	if _, err := os.Stat(filepath.Join(state, "localcluster.pid")); !os.IsNotExist(err) {
		t.Errorf("localcluster.pid left behind (%v)", err)
	}
}

// TestADetachedUpThatGivesUpStopsTheStartingCluster: `up --detach` whose
// --wait runs out stops the cluster it was starting before it returns,
// as on Ctrl-C: nothing of it runs afterwards and its pid file is gone,
// so the next `up` (or make demo) does not take a cluster shutting down
// for a running one.
func TestADetachedUpThatGivesUpStopsTheStartingCluster(t *testing.T) {
	state := t.TempDir()
	var out bytes.Buffer
	cmd := localcluster(t, &out, "up", "--detach", "--wait=1500ms", "--state-dir="+state, "--assets="+assets(t),
		"--apiserver-port=0", "--etcd-port=0", "--crd-dir=", "--pod-ips=127.0.8.171-127.0.8.180")
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	seen := map[int]bool{}
	defer func() {
		for p := range seen {
			if alive(p) {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
		_, _ = cluster.KillRecorded(state, 10*time.Second)
	}()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var waitErr error
wait:
	for {
		select {
		case waitErr = <-exited:
			break wait
		case <-tick.C:
			for _, p := range descendants(cmd.Process.Pid) {
				seen[p] = true
			}
		case <-time.After(3 * time.Minute):
			t.Fatalf("up --detach did not return after its --wait:\n%s", out.String())
		}
	}
	if waitErr == nil {
		// Ready within 1.5 s: there was no give-up to test.
		if pid, ok := running(state); ok {
			_ = syscall.Kill(pid, syscall.SIGTERM)
			for start := time.Now(); alive(pid) && time.Since(start) < time.Minute; {
				time.Sleep(100 * time.Millisecond)
			}
		}
		t.Skip("the local cluster was ready within --wait=1500ms")
	}
	if !strings.Contains(out.String(), "not ready after") || len(seen) == 0 {
		t.Fatalf("up --detach gave up (%v) without saying so or without starting anything (%d processes seen):\n%s", waitErr, len(seen), out.String())
	}
	for p := range seen {
		if alive(p) {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
			t.Errorf("process %d (%s) still runs after up --detach gave up", p, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		}
	}
	if _, err := os.Stat(pidFile(state)); !os.IsNotExist(err) {
		t.Errorf("localcluster.pid left behind (%v)", err)
	}
}
