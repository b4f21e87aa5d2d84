package kubelet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/clock"
)

// Backoff is the restart delay policy: the k-th consecutive restart waits
// min(Initial<<(k-1), Max); a run that lasted Reset or longer starts the
// count again.
type Backoff struct {
	Initial, Max, Reset time.Duration
}

// Delay is the wait before the k-th consecutive restart (k >= 1).
func (b Backoff) Delay(k int) time.Duration {
	d := b.Initial
	for i := 1; i < k && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// launch is what one run of a container executes.
type launch struct {
	argv []string
	env  []string
	dir  string
}

// containerRunner runs one container: start, probes, restarts with backoff,
// stop with a grace period. Its status is read by the pod worker.
type containerRunner struct {
	spec    corev1.Container
	podIP   string
	policy  corev1.RestartPolicy
	prepare func() (launch, error) // resolved at every start, as the kubelet does
	logPath string
	clock   clock.WithTicker
	backoff Backoff
	notify  func()
	// podGrace is the pod's termination grace period, used when a failed
	// liveness probe restarts the container.
	podGrace time.Duration

	mu     sync.Mutex
	status corev1.ContainerStatus
	pid    int
	// terminal is true once the container will not run again.
	terminal bool

	stop chan time.Duration // grace period; buffered
	done chan struct{}
}

func newContainerRunner(spec corev1.Container, podIP string, policy corev1.RestartPolicy, prepare func() (launch, error), logPath string, clk clock.WithTicker, b Backoff, notify func()) *containerRunner {
	return &containerRunner{
		spec: spec, podIP: podIP, policy: policy, prepare: prepare, logPath: logPath,
		clock: clk, backoff: b, notify: notify,
		status: corev1.ContainerStatus{
			Name:  spec.Name,
			Image: spec.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}},
		},
		stop: make(chan time.Duration, 1),
		done: make(chan struct{}),
	}
}

// Status returns a copy of the container's status.
func (r *containerRunner) Status() (corev1.ContainerStatus, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return *r.status.DeepCopy(), r.terminal
}

// PID is the running process's id, 0 when none runs.
func (r *containerRunner) PID() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pid
}

// Stop asks the runner to stop the process with the grace period and not
// restart it; Done closes when it has.
func (r *containerRunner) Stop(grace time.Duration) {
	select {
	case r.stop <- grace:
	default:
	}
}

// Done is closed when the runner will not run the container again.
func (r *containerRunner) Done() <-chan struct{} { return r.done }

func (r *containerRunner) update(f func(s *corev1.ContainerStatus)) {
	r.mu.Lock()
	f(&r.status)
	r.mu.Unlock()
	r.notify()
}

func (r *containerRunner) run() {
	defer close(r.done)
	defer func() {
		r.mu.Lock()
		r.terminal = true
		r.mu.Unlock()
		r.notify()
	}()
	crashes := 0
	for {
		if crashes > 0 {
			delay := r.backoff.Delay(crashes)
			r.update(func(s *corev1.ContainerStatus) {
				s.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
					Reason: "CrashLoopBackOff", Message: fmt.Sprintf("back-off %s restarting failed container %s", delay, r.spec.Name),
				}}
			})
			select {
			case <-r.stop:
				return
			case <-r.clock.After(delay):
			}
		}
		started := r.clock.Now()
		term, stopped := r.runOnce()
		r.update(func(s *corev1.ContainerStatus) {
			s.State = corev1.ContainerState{Terminated: term}
			s.Ready = false
			s.Started = ptrTo(false)
		})
		if stopped || !shouldRestart(r.policy, term.ExitCode) {
			return
		}
		if r.clock.Since(started) >= r.backoff.Reset {
			crashes = 0
		}
		crashes++
		r.update(func(s *corev1.ContainerStatus) {
			s.LastTerminationState = corev1.ContainerState{Terminated: term}
			s.RestartCount++
		})
	}
}

func shouldRestart(p corev1.RestartPolicy, exitCode int32) bool {
	switch p {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return exitCode != 0
	}
	return true
}

// runOnce starts the process and waits for it to exit, to fail its
// liveness probe, or to be stopped. stopped reports the last.
func (r *containerRunner) runOnce() (term *corev1.ContainerStateTerminated, stopped bool) {
	startErr := func(err error) *corev1.ContainerStateTerminated {
		now := metav1.NewTime(r.clock.Now())
		return &corev1.ContainerStateTerminated{ExitCode: 128, Reason: "StartError", Message: err.Error(), StartedAt: now, FinishedAt: now}
	}
	l, err := r.prepare()
	if err != nil {
		return startErr(err), false
	}
	logf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return startErr(err), false
	}
	defer logf.Close()
	cmd := exec.Command(l.argv[0], l.argv[1:]...)
	cmd.Env, cmd.Dir = l.env, l.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(logf, "--- %s process kubelet: start %q: %v\n", r.clock.Now().UTC().Format(time.RFC3339Nano), l.argv[0], err)
		return startErr(err), false
	}
	startedAt := metav1.NewTime(r.clock.Now())
	fmt.Fprintf(logf, "--- %s process kubelet: started pid %d: %q\n", startedAt.UTC().Format(time.RFC3339Nano), cmd.Process.Pid, l.argv)
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()

	r.mu.Lock()
	r.pid = cmd.Process.Pid
	r.mu.Unlock()
	r.update(func(s *corev1.ContainerStatus) {
		s.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: startedAt}}
		s.ContainerID = "process://" + strconv.Itoa(cmd.Process.Pid)
		s.ImageID = "process://" + l.argv[0]
		s.Started = ptrTo(r.spec.StartupProbe == nil)
		s.Ready = r.spec.StartupProbe == nil && r.spec.ReadinessProbe == nil
	})

	ctx, cancel := context.WithCancel(context.Background())
	unhealthy := make(chan string, 1)
	probesDone := r.startProbes(ctx, l.env, unhealthy)

	var reason, message string
	select {
	case <-exited:
	case msg := <-unhealthy:
		reason, message = "Error", msg
		fmt.Fprintf(logf, "--- %s process kubelet: %s; restarting\n", r.clock.Now().UTC().Format(time.RFC3339Nano), msg)
		r.kill(cmd.Process.Pid, exited, r.grace())
	case g := <-r.stop:
		stopped = true
		r.kill(cmd.Process.Pid, exited, g)
	}
	cancel()
	probesDone.Wait()
	r.mu.Lock()
	r.pid = 0
	r.mu.Unlock()

	term = &corev1.ContainerStateTerminated{
		StartedAt:   startedAt,
		FinishedAt:  metav1.NewTime(r.clock.Now()),
		ContainerID: "process://" + strconv.Itoa(cmd.Process.Pid),
		Message:     message,
	}
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled():
		term.Signal = int32(ws.Signal())
		term.ExitCode = 128 + int32(ws.Signal())
	default:
		term.ExitCode = int32(ws.ExitStatus())
	}
	switch {
	case reason != "":
		term.Reason = reason
	case term.ExitCode == 0:
		term.Reason = "Completed"
	default:
		term.Reason = "Error"
	}
	fmt.Fprintf(logf, "--- %s process kubelet: pid %d exited with code %d\n", term.FinishedAt.UTC().Format(time.RFC3339Nano), cmd.Process.Pid, term.ExitCode)
	return term, stopped
}

// grace is the pod's termination grace period, used when a liveness probe
// restarts the container.
func (r *containerRunner) grace() time.Duration {
	if p := r.spec.LivenessProbe; p != nil && p.TerminationGracePeriodSeconds != nil {
		return time.Duration(*p.TerminationGracePeriodSeconds) * time.Second
	}
	return r.podGrace
}

// kill sends SIGTERM to the process group, then SIGKILL once grace has
// passed, and returns when the process has exited.
func (r *containerRunner) kill(pid int, exited <-chan struct{}, grace time.Duration) {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-exited:
		// The leader is gone; make sure no child outlives it.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		return
	case <-r.clock.After(grace):
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-exited
}

// startProbes runs the container's probes until ctx ends. A startup probe
// gates the others; a failed liveness or startup probe sends a message on
// unhealthy.
func (r *containerRunner) startProbes(ctx context.Context, env []string, unhealthy chan<- string) *sync.WaitGroup {
	var wg sync.WaitGroup
	others := func() {
		if p := r.spec.ReadinessProbe; p != nil {
			wg.Go(func() {
				r.probeLoop(ctx, p, env, func(succ, fail int, msg string) bool {
					if succ >= int(max(p.SuccessThreshold, 1)) {
						r.setReady(true)
					} else if fail >= int(max(p.FailureThreshold, 1)) {
						r.setReady(false)
					}
					return true
				})
			})
		}
		if p := r.spec.LivenessProbe; p != nil {
			wg.Go(func() {
				r.probeLoop(ctx, p, env, func(succ, fail int, msg string) bool {
					if fail >= int(max(p.FailureThreshold, 1)) {
						report(unhealthy, "liveness probe failed: "+msg)
						return false
					}
					return true
				})
			})
		}
	}
	if p := r.spec.StartupProbe; p != nil {
		wg.Go(func() {
			r.probeLoop(ctx, p, env, func(succ, fail int, msg string) bool {
				if succ >= 1 {
					r.update(func(s *corev1.ContainerStatus) {
						s.Started = ptrTo(true)
						s.Ready = r.spec.ReadinessProbe == nil
					})
					others()
					return false
				}
				if fail >= int(max(p.FailureThreshold, 1)) {
					report(unhealthy, "startup probe failed: "+msg)
					return false
				}
				return true
			})
		})
	} else {
		others()
	}
	return &wg
}

func report(ch chan<- string, msg string) {
	select {
	case ch <- msg:
	default:
	}
}

func (r *containerRunner) setReady(ready bool) {
	r.mu.Lock()
	changed := r.status.Ready != ready
	r.status.Ready = ready
	r.mu.Unlock()
	if changed {
		r.notify()
	}
}

// probeLoop runs p every period after the initial delay and hands the
// consecutive success and failure counts to result until it returns false.
func (r *containerRunner) probeLoop(ctx context.Context, p *corev1.Probe, env []string, result func(succ, fail int, msg string) bool) {
	if d := time.Duration(p.InitialDelaySeconds) * time.Second; d > 0 {
		select {
		case <-ctx.Done():
			return
		case <-r.clock.After(d):
		}
	}
	period := time.Duration(max(p.PeriodSeconds, 1)) * time.Second
	t := r.clock.NewTicker(period)
	defer t.Stop()
	succ, fail := 0, 0
	for {
		err := r.probeOnce(ctx, p, env)
		if ctx.Err() != nil {
			return
		}
		msg := ""
		if err == nil {
			succ, fail = succ+1, 0
		} else {
			succ, fail, msg = 0, fail+1, err.Error()
		}
		if !result(succ, fail, msg) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// ErrUnsupportedProbe is returned for gRPC probes.
var ErrUnsupportedProbe = errors.New("unsupported probe")

func (r *containerRunner) probeOnce(ctx context.Context, p *corev1.Probe, env []string) error {
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.HTTPGet != nil:
		g := p.HTTPGet
		port, err := resolvePort(g.Port, &r.spec)
		if err != nil {
			return err
		}
		host := g.Host
		if host == "" {
			host = r.podIP
		}
		scheme := "http"
		if g.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, strconv.Itoa(port))+g.Path, nil)
		if err != nil {
			return err
		}
		for _, h := range g.HTTPHeaders {
			req.Header.Add(h.Name, h.Value)
		}
		client := &http.Client{Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // probes do not verify, as in the kubelet
			DisableKeepAlives: true,
		}}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return nil
	case p.TCPSocket != nil:
		port, err := resolvePort(p.TCPSocket.Port, &r.spec)
		if err != nil {
			return err
		}
		host := p.TCPSocket.Host
		if host == "" {
			host = r.podIP
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return c.Close()
	case p.Exec != nil && len(p.Exec.Command) > 0:
		// Exec probes run on the host with the container's environment.
		cmd := exec.CommandContext(ctx, p.Exec.Command[0], p.Exec.Command[1:]...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("exec probe: %w: %s", err, out)
		}
		return nil
	}
	return fmt.Errorf("%w: only httpGet, tcpSocket and exec probes run locally", ErrUnsupportedProbe)
}

// resolvePort turns a number or a named container port into a number.
func resolvePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.Name, p.StrVal)
}

func ptrTo[T any](v T) *T { return &v }
