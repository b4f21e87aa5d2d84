package kubelet

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	testingclock "k8s.io/utils/clock/testing"
)

// runnerFixture runs the test binary as a container process (helperMain)
// under a fake clock.
type runnerFixture struct {
	t     *testing.T
	clock *testingclock.FakeClock
	r     *containerRunner
	log   string
	ip    string
	port  int
}

func newRunnerFixture(t *testing.T, spec corev1.Container, policy corev1.RestartPolicy, b Backoff, env ...string) *runnerFixture {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := NewIPPool(netip.MustParseAddr("127.0.8.20"), netip.MustParseAddr("127.0.8.99"))
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	ip, err := pool.Allocate([]int32{int32(port)})
	if err != nil {
		t.Fatal(err)
	}
	f := &runnerFixture{t: t, clock: testingclock.NewFakeClock(time.Unix(1_700_000_000, 0)), log: filepath.Join(t.TempDir(), "c.log"), ip: ip.String(), port: port}
	spec.Ports = append(spec.Ports, corev1.ContainerPort{Name: "admin", ContainerPort: int32(port)})
	env = append(env, "POD_IP="+f.ip, "PORT="+strconv.Itoa(port))
	prepare := func() (launch, error) { return launch{argv: []string{self}, env: env, dir: t.TempDir()}, nil }
	f.r = newContainerRunner(spec, f.ip, policy, prepare, f.log, f.clock, b, func() {})
	f.r.podGrace = 30 * time.Second
	go f.r.run()
	t.Cleanup(func() {
		f.r.Stop(0)
		select {
		case <-f.r.Done():
		case <-time.After(10 * time.Second):
			t.Error("runner did not stop")
		}
	})
	return f
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// eventually polls cond for up to 10 s of real time.
func (f *runnerFixture) eventually(what string, cond func(corev1.ContainerStatus) bool) corev1.ContainerStatus {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := f.r.Status()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out waiting for %s; status %+v; log:\n%s", what, st, f.logText())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stepUntil advances the fake clock a second at a time until cond holds.
// It steps only while no process is starting up (the current one serves,
// or the container waits in back-off), so a probe period never passes
// before the process could listen.
func (f *runnerFixture) stepUntil(what string, cond func(corev1.ContainerStatus) bool) corev1.ContainerStatus {
	f.t.Helper()
	for i := 0; i < 500; i++ {
		st, _ := f.r.Status()
		if cond(st) {
			return st
		}
		log := f.logText()
		serving := strings.Count(log, "helper serving") == strings.Count(log, "process kubelet: started pid")
		if st.State.Waiting != nil || (st.State.Running != nil && serving) {
			f.clock.Step(time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
	st, _ := f.r.Status()
	f.t.Fatalf("clock stepped 500 s and still not %s; status %+v; log:\n%s", what, st, f.logText())
	return st
}

func (f *runnerFixture) logText() string {
	b, _ := os.ReadFile(f.log)
	return string(b)
}

func (f *runnerFixture) starts() int {
	return strings.Count(f.logText(), "process kubelet: started pid")
}

// waitWaiters waits until a goroutine blocks on the fake clock.
func (f *runnerFixture) waitWaiters() {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f.clock.HasWaiters() {
		if time.Now().After(deadline) {
			f.t.Fatal("nothing waits on the clock")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCrashingContainerRestartsWithDoublingBackoff(t *testing.T) {
	f := newRunnerFixture(t, corev1.Container{Name: "c"}, corev1.RestartPolicyAlways,
		Backoff{Initial: 10 * time.Second, Max: 40 * time.Second, Reset: time.Hour},
		helperEnv+"=exit", "EXIT_CODE=3")

	st := f.eventually("first crash in back-off", func(s corev1.ContainerStatus) bool {
		return s.RestartCount == 1 && s.State.Waiting != nil && s.State.Waiting.Reason == "CrashLoopBackOff"
	})
	if lt := st.LastTerminationState.Terminated; lt == nil || lt.ExitCode != 3 || lt.Reason != "Error" {
		t.Fatalf("last termination = %+v, want exit code 3, reason Error", lt)
	}
	if !strings.Contains(st.State.Waiting.Message, "back-off 10s") {
		t.Errorf("waiting message %q does not say back-off 10s", st.State.Waiting.Message)
	}
	f.waitWaiters()
	f.clock.Step(9 * time.Second)
	time.Sleep(100 * time.Millisecond)
	if n := f.starts(); n != 1 {
		t.Fatalf("restarted before the 10 s back-off ended: %d starts", n)
	}
	f.clock.Step(time.Second)
	st = f.eventually("second crash in back-off", func(s corev1.ContainerStatus) bool {
		return s.RestartCount == 2 && s.State.Waiting != nil
	})
	if !strings.Contains(st.State.Waiting.Message, "back-off 20s") {
		t.Errorf("second waiting message %q does not say back-off 20s", st.State.Waiting.Message)
	}
	if n := f.starts(); n != 2 {
		t.Errorf("%d starts after one back-off, want 2", n)
	}
}

func TestRestartPolicyNeverLeavesTheContainerTerminated(t *testing.T) {
	f := newRunnerFixture(t, corev1.Container{Name: "c"}, corev1.RestartPolicyNever,
		Backoff{Initial: time.Second, Max: time.Second, Reset: time.Hour}, helperEnv+"=exit", "EXIT_CODE=0")
	select {
	case <-f.r.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("runner still running after the process exited under restartPolicy Never")
	}
	st, terminal := f.r.Status()
	if !terminal || st.State.Terminated == nil || st.State.Terminated.Reason != "Completed" || st.RestartCount != 0 {
		t.Errorf("status %+v terminal=%v, want Completed without restarts", st, terminal)
	}
}

func TestStopSendsSIGTERMThenSIGKILLAfterTheGracePeriod(t *testing.T) {
	f := newRunnerFixture(t, corev1.Container{Name: "c"}, corev1.RestartPolicyAlways,
		Backoff{Initial: time.Second, Max: time.Second, Reset: time.Hour}, helperEnv+"=serve", "IGNORE_TERM=1")
	f.eventually("running", func(s corev1.ContainerStatus) bool { return s.State.Running != nil })
	for !strings.Contains(f.logText(), "helper serving") {
		time.Sleep(10 * time.Millisecond)
	}
	pid := f.r.PID()

	f.r.Stop(30 * time.Second)
	for !strings.Contains(f.logText(), "got SIGTERM") {
		time.Sleep(10 * time.Millisecond)
	}
	f.waitWaiters()
	f.clock.Step(29 * time.Second)
	time.Sleep(100 * time.Millisecond)
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("process killed before the grace period ended: %v", err)
	}
	f.clock.Step(time.Second)
	select {
	case <-f.r.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("process not killed after the grace period")
	}
	st, terminal := f.r.Status()
	if tm := st.State.Terminated; !terminal || tm == nil || tm.Signal != int32(syscall.SIGKILL) || tm.ExitCode != 137 {
		t.Errorf("terminated = %+v terminal=%v, want SIGKILL, exit code 137", tm, terminal)
	}
}

func TestStopOfAProcessThatHonoursSIGTERMDoesNotWaitForTheGracePeriod(t *testing.T) {
	f := newRunnerFixture(t, corev1.Container{Name: "c"}, corev1.RestartPolicyAlways,
		Backoff{Initial: time.Second, Max: time.Second, Reset: time.Hour}, helperEnv+"=serve")
	f.eventually("running", func(s corev1.ContainerStatus) bool { return s.State.Running != nil })
	for !strings.Contains(f.logText(), "helper serving") {
		time.Sleep(10 * time.Millisecond)
	}
	f.r.Stop(time.Hour)
	select {
	case <-f.r.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a process that exits on SIGTERM was not seen exiting")
	}
	st, _ := f.r.Status()
	if tm := st.State.Terminated; tm == nil || tm.ExitCode != 0 || tm.Reason != "Completed" {
		t.Errorf("terminated = %+v, want exit 0 Completed", tm)
	}
	if st.RestartCount != 0 {
		t.Errorf("restart count %d after a stop, want 0", st.RestartCount)
	}
}

func TestProbesReportReadinessAndALivenessFailureRestarts(t *testing.T) {
	dir := t.TempDir()
	ready, unhealthy := filepath.Join(dir, "ready"), filepath.Join(dir, "unhealthy")
	probe := func(path string, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("admin")}},
			PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: failures,
		}
	}
	f := newRunnerFixture(t, corev1.Container{Name: "c", ReadinessProbe: probe("/readyz", 1), LivenessProbe: probe("/healthz", 2)},
		corev1.RestartPolicyAlways, Backoff{Initial: time.Second, Max: time.Second, Reset: time.Hour},
		helperEnv+"=serve", "READY_FILE="+ready, "UNHEALTHY_FILE="+unhealthy)

	st := f.eventually("running", func(s corev1.ContainerStatus) bool { return s.State.Running != nil })
	if st.Ready {
		t.Fatal("ready before the readiness probe passed")
	}
	if st.Started == nil || !*st.Started {
		t.Error("started is not true for a container without a startup probe")
	}
	if err := os.WriteFile(ready, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f.stepUntil("ready", func(s corev1.ContainerStatus) bool { return s.Ready })
	if err := os.Remove(ready); err != nil {
		t.Fatal(err)
	}
	f.stepUntil("not ready again", func(s corev1.ContainerStatus) bool { return !s.Ready })

	if err := os.WriteFile(unhealthy, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	st = f.stepUntil("restarted by liveness", func(s corev1.ContainerStatus) bool { return s.RestartCount >= 1 })
	if lt := st.LastTerminationState.Terminated; lt == nil || !strings.Contains(lt.Message, "liveness probe failed") {
		t.Errorf("last termination %+v does not name the liveness probe", lt)
	}
	if err := os.Remove(unhealthy); err != nil {
		t.Fatal(err)
	}
	f.stepUntil("running again", func(s corev1.ContainerStatus) bool { return s.State.Running != nil })
}

func TestIPPoolSkipsAddressesWithATakenPort(t *testing.T) {
	port := freePort(t)
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.8.180", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pool, err := NewIPPool(netip.MustParseAddr("127.0.8.180"), netip.MustParseAddr("127.0.8.181"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := pool.Allocate([]int32{int32(port)})
	if err != nil || a.String() != "127.0.8.181" {
		t.Fatalf("Allocate = %v, %v; want 127.0.8.181 (port taken on .180)", a, err)
	}
	if _, err := pool.Allocate([]int32{int32(port)}); err == nil {
		t.Fatal("allocated with every address used or blocked")
	}
	pool.Release(a)
	if b, err := pool.Allocate([]int32{int32(port)}); err != nil || b != a {
		t.Fatalf("after release Allocate = %v, %v; want %v again", b, err, a)
	}
}
