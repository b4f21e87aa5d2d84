package kubelet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ErrInitContainers is reported for pods with init containers, which the
// process kubelet does not run.
var ErrInitContainers = errors.New("init containers are not supported by the process kubelet")

// podWorker owns one pod (by UID) on this node: its address, volumes,
// container runners and status.
type podWorker struct {
	k   *Kubelet
	uid types.UID

	updates  chan *corev1.Pod // latest pod object; capacity 1
	kick     chan struct{}    // a container's status changed
	resync   chan struct{}    // a ConfigMap or Secret changed
	gone     chan struct{}    // the pod left the API
	goneOnce sync.Once
	stopAll  chan struct{} // the kubelet stops
	stopOnce sync.Once

	ip        netip.Addr
	startTime metav1.Time
	dir       string
	// volErr is why the containers cannot start yet.
	volErr    error
	runners   []*containerRunner
	lastWrite *corev1.PodStatus
	// tokens are the pod's projected service-account tokens.
	tokens *tokenCache
}

// podSources is what a pod's volumes are made of: the kubelet's caches,
// the node's allocatable resources and the pod's own tokens.
type podSources struct {
	*Kubelet
	tokens *tokenCache
}

func (s podSources) ServiceAccountToken(pod *corev1.Pod, p *corev1.ServiceAccountTokenProjection) ([]byte, error) {
	return s.tokens.Token(pod, p)
}

func (s podSources) Allocatable() corev1.ResourceList { return s.cfg.Capacity }

func newPodWorker(k *Kubelet, pod *corev1.Pod) *podWorker {
	return &podWorker{
		k: k, uid: pod.UID,
		updates: make(chan *corev1.Pod, 1),
		kick:    make(chan struct{}, 1),
		resync:  make(chan struct{}, 1),
		gone:    make(chan struct{}),
		stopAll: make(chan struct{}),
		dir:     k.podDir(pod.UID),
		tokens:  newTokenCache(k.ctx, k.cfg.Client, k.cfg.Clock),
	}
}

func (w *podWorker) update(p *corev1.Pod) {
	for {
		select {
		case w.updates <- p:
			return
		default:
		}
		select { // drop the stale one
		case <-w.updates:
		default:
		}
	}
}

func (w *podWorker) markGone()      { w.goneOnce.Do(func() { close(w.gone) }) }
func (w *podWorker) shutdown()      { w.stopOnce.Do(func() { close(w.stopAll) }) }
func (w *podWorker) requestResync() { poke(w.resync) }
func (w *podWorker) notify()        { poke(w.kick) }

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func podGrace(pod *corev1.Pod) time.Duration {
	switch {
	case pod.DeletionGracePeriodSeconds != nil:
		return time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	case pod.Spec.TerminationGracePeriodSeconds != nil:
		return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}

func (w *podWorker) log() func(msg string, args ...any) {
	return w.k.cfg.Log.Info
}

func (w *podWorker) run(pod *corev1.Pod) {
	key := pod.Namespace + "/" + pod.Name
	w.startTime = metav1.NewTime(w.k.cfg.Clock.Now())
	defer func() { _ = os.RemoveAll(w.dir) }()

	// An address with every declared port free.
	var ports []int32
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			ports = append(ports, p.ContainerPort)
		}
	}
	for {
		ip, err := w.k.cfg.IPs.Allocate(ports)
		if err == nil {
			w.ip = ip
			break
		}
		w.volErr = err
		pod = w.writeStatus(pod)
		var stop bool
		if pod, stop = w.waitRetry(pod); stop {
			return
		}
	}
	defer w.k.cfg.IPs.Release(w.ip)
	w.log()("pod starting", "pod", key, "ip", w.ip.String())

	// Volumes, until they can all be provided.
	for {
		if len(pod.Spec.InitContainers) > 0 {
			w.volErr = ErrInitContainers
		} else {
			w.volErr = w.setupVolumes(w.view(pod))
		}
		pod = w.writeStatus(pod)
		if w.volErr == nil {
			break
		}
		var stop bool
		if pod, stop = w.waitRetry(pod); stop {
			return
		}
	}

	for i := range pod.Spec.Containers {
		c := pod.Spec.Containers[i]
		r := newContainerRunner(c, w.ip.String(), pod.Spec.RestartPolicy, w.launcher(pod, &c),
			filepath.Join(w.k.cfg.LogDir, fmt.Sprintf("%s_%s_%s.log", pod.Namespace, pod.Name, c.Name)),
			w.k.cfg.Clock, w.k.cfg.Backoff, w.notify)
		r.podGrace = podGrace(pod)
		w.runners = append(w.runners, r)
		go r.run()
	}
	allDone := make(chan struct{})
	go func() {
		for _, r := range w.runners {
			<-r.Done()
		}
		close(allDone)
	}()

	resync := w.k.cfg.Clock.NewTicker(w.k.cfg.VolumeResync)
	defer resync.Stop()
	terminating := false
	stopRunners := func(grace time.Duration) {
		for _, r := range w.runners {
			r.Stop(grace)
		}
	}
	for {
		select {
		case p := <-w.updates:
			pod = p
			if pod.DeletionTimestamp != nil && !terminating {
				terminating = true
				w.log()("pod terminating", "pod", key, "grace", podGrace(pod))
				stopRunners(podGrace(pod))
			}
		case <-w.kick:
			pod = w.writeStatus(pod)
		case <-w.resync:
			w.refreshVolumes(pod)
		case <-resync.C():
			w.refreshVolumes(pod)
		case <-w.gone:
			stopRunners(podGrace(pod))
			<-allDone
			return
		case <-w.stopAll:
			stopRunners(min(podGrace(pod), w.k.cfg.ShutdownGrace))
			<-allDone
			return
		case <-allDone:
			allDone = nil // fire once
			pod = w.writeStatus(pod)
			if terminating {
				// Directories go before the object, so a pod that is gone
				// from the API has left nothing behind but its PVCs and logs.
				_ = os.RemoveAll(w.dir)
				if err := w.k.deletePod(pod); err != nil {
					w.k.cfg.Log.Warn("remove terminated pod", "pod", key, "err", err)
				}
				w.log()("pod removed", "pod", key)
				return
			}
			// Completed under restartPolicy Never/OnFailure: keep the
			// record until the pod is deleted.
		}
	}
}

// waitRetry waits a second (or for an update); stop is true when the pod
// is gone, deleted or the kubelet stops.
func (w *podWorker) waitRetry(pod *corev1.Pod) (*corev1.Pod, bool) {
	select {
	case p := <-w.updates:
		if p.DeletionTimestamp != nil {
			_ = w.k.deletePod(p)
			return p, true
		}
		return p, false
	case <-w.gone:
		return pod, true
	case <-w.stopAll:
		return pod, true
	case <-w.k.cfg.Clock.After(time.Second):
		return pod, false
	}
}

// view is pod with the status fields the downward API reads.
func (w *podWorker) view(pod *corev1.Pod) *corev1.Pod {
	v := pod.DeepCopy()
	v.Status.PodIP = w.ip.String()
	v.Status.PodIPs = []corev1.PodIP{{IP: w.ip.String()}}
	v.Status.HostIP = w.k.cfg.HostIP
	v.Status.HostIPs = []corev1.HostIP{{IP: w.k.cfg.HostIP}}
	return v
}

func (w *podWorker) layout(pod *corev1.Pod) volumeLayout {
	return volumeLayout{podDir: w.dir, claimDir: func(claim string) string { return w.k.claimDir(pod.Namespace, claim) }}
}

// mounts maps the mount paths of containers (all of the pod's when c is
// nil) to host directories.
func (w *podWorker) mounts(pod *corev1.Pod, c *corev1.Container) map[string]string {
	l := w.layout(pod)
	dirs := map[string]string{}
	for i := range pod.Spec.Volumes {
		dirs[pod.Spec.Volumes[i].Name] = l.dir(pod, &pod.Spec.Volumes[i])
	}
	out := map[string]string{}
	cs := pod.Spec.Containers
	if c != nil {
		cs = []corev1.Container{*c}
	}
	for _, c := range cs {
		for _, m := range c.VolumeMounts {
			d, ok := dirs[m.Name]
			if !ok {
				continue
			}
			if m.SubPath != "" {
				d = filepath.Join(d, filepath.Clean("/"+m.SubPath))
			}
			if _, dup := out[m.MountPath]; !dup {
				out[m.MountPath] = d
			}
		}
	}
	return out
}

func (w *podWorker) setupVolumes(pod *corev1.Pod) error {
	// The pod directory is the processes' working directory and HOME: it
	// must exist even when the pod has no volume (exec would fail with a
	// misleading "no such file or directory" for the binary).
	if err := os.MkdirAll(w.dir, 0o755); err != nil {
		return fmt.Errorf("pod directory: %w", err)
	}
	l := w.layout(pod)
	var rewrite func(string) string
	if w.k.cfg.RewriteConfigMapPaths {
		rewrite = newPathRewriter(w.mounts(pod, nil)).Rewrite
	}
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		dir := l.dir(pod, v)
		if v.PersistentVolumeClaim != nil {
			if _, err := w.k.pvcs.PersistentVolumeClaims(pod.Namespace).Get(v.PersistentVolumeClaim.ClaimName); err != nil {
				return fmt.Errorf("volume %q: persistentvolumeclaim %q: %w", v.Name, v.PersistentVolumeClaim.ClaimName, err)
			}
		}
		files, isFiles, err := volumeFiles(pod, v, podSources{w.k, w.tokens}, rewrite)
		if err != nil {
			return fmt.Errorf("volume %q: %w", v.Name, err)
		}
		if !isFiles {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("volume %q: %w", v.Name, err)
			}
			continue
		}
		if _, err := writeAtomic(dir, files, w.k.cfg.Clock.Now()); err != nil {
			return fmt.Errorf("volume %q: %w", v.Name, err)
		}
	}
	for _, c := range pod.Spec.Containers {
		for _, d := range w.mounts(pod, &c) {
			if err := os.MkdirAll(d, 0o755); err != nil { // subPath directories
				return err
			}
		}
	}
	return nil
}

// refreshVolumes rewrites ConfigMap, Secret and downward API volumes whose
// source changed. A source that went missing keeps the old files.
func (w *podWorker) refreshVolumes(pod *corev1.Pod) {
	if w.volErr != nil {
		return
	}
	view := w.view(pod)
	l := w.layout(view)
	var rewrite func(string) string
	if w.k.cfg.RewriteConfigMapPaths {
		rewrite = newPathRewriter(w.mounts(view, nil)).Rewrite
	}
	for i := range view.Spec.Volumes {
		v := &view.Spec.Volumes[i]
		files, isFiles, err := volumeFiles(view, v, podSources{w.k, w.tokens}, rewrite)
		if err != nil || !isFiles {
			continue
		}
		if changed, err := writeAtomic(l.dir(view, v), files, w.k.cfg.Clock.Now()); err != nil {
			w.k.cfg.Log.Warn("refresh volume", "pod", pod.Namespace+"/"+pod.Name, "volume", v.Name, "err", err)
		} else if changed {
			w.log()("volume refreshed", "pod", pod.Namespace+"/"+pod.Name, "volume", v.Name)
		}
	}
}

// launcher resolves what a container runs, at each start.
func (w *podWorker) launcher(pod *corev1.Pod, c *corev1.Container) func() (launch, error) {
	return func() (launch, error) {
		view := w.view(pod)
		rw := newPathRewriter(w.mounts(view, c))
		env, err := resolveEnv(view, c, w.k, w.k.cfg.Capacity)
		if err != nil {
			return launch{}, err
		}
		bin, err := w.k.cfg.Images.Resolve(c.Image)
		if err != nil {
			return launch{}, err
		}
		vars := map[string]string{}
		l := launch{
			dir: w.dir,
			env: []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + w.dir, "HOSTNAME=" + pod.Name},
		}
		for _, e := range env {
			v := rw.Rewrite(e.Value)
			vars[e.Name] = v
			l.env = append(l.env, e.Name+"="+v)
		}
		l.argv = []string{bin}
		if len(c.Command) > 1 {
			for _, a := range c.Command[1:] {
				l.argv = append(l.argv, rw.Rewrite(expand(a, vars)))
			}
		}
		for _, a := range c.Args {
			l.argv = append(l.argv, rw.Rewrite(expand(a, vars)))
		}
		if c.WorkingDir != "" {
			l.dir = rw.Rewrite(path.Clean(c.WorkingDir))
			if !strings.HasPrefix(l.dir, w.k.cfg.RootDir) {
				l.dir = w.dir // not a mounted directory: the pod directory stands in
			}
		}
		return l, nil
	}
}

// status computes the pod status from the containers.
func (w *podWorker) status(pod *corev1.Pod) corev1.PodStatus {
	st := *pod.Status.DeepCopy()
	if w.ip.IsValid() {
		st.PodIP = w.ip.String()
		st.PodIPs = []corev1.PodIP{{IP: st.PodIP}}
	}
	st.HostIP = w.k.cfg.HostIP
	st.HostIPs = []corev1.HostIP{{IP: w.k.cfg.HostIP}}
	st.StartTime = &w.startTime
	st.ContainerStatuses = nil
	allReady, anyRunning, allTerminal, allSucceeded := true, false, true, true
	for i, c := range pod.Spec.Containers {
		var cs corev1.ContainerStatus
		terminal := false
		if i < len(w.runners) {
			cs, terminal = w.runners[i].Status()
		} else {
			cs = corev1.ContainerStatus{Name: c.Name, Image: c.Image, State: corev1.ContainerState{
				Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"},
			}}
			if w.volErr != nil {
				cs.State.Waiting.Message = w.volErr.Error()
			}
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		allReady = allReady && cs.Ready
		anyRunning = anyRunning || cs.State.Running != nil || cs.RestartCount > 0
		allTerminal = allTerminal && terminal
		allSucceeded = allSucceeded && terminal && cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0
	}
	switch {
	case len(w.runners) > 0 && allTerminal && allSucceeded:
		st.Phase = corev1.PodSucceeded
	case len(w.runners) > 0 && allTerminal:
		st.Phase = corev1.PodFailed
	case anyRunning:
		st.Phase = corev1.PodRunning
	default:
		st.Phase = corev1.PodPending
	}
	now := metav1.NewTime(w.k.cfg.Clock.Now())
	boolStatus := func(b bool) corev1.ConditionStatus {
		if b {
			return corev1.ConditionTrue
		}
		return corev1.ConditionFalse
	}
	volumesReady := w.volErr == nil && len(w.runners) > 0
	setPodCondition(&st, corev1.PodReadyToStartContainers, boolStatus(volumesReady), now)
	setPodCondition(&st, corev1.PodInitialized, boolStatus(w.volErr == nil || len(pod.Spec.InitContainers) == 0), now)
	ready := volumesReady && allReady && !allTerminal
	setPodCondition(&st, corev1.ContainersReady, boolStatus(ready), now)
	setPodCondition(&st, corev1.PodReady, boolStatus(ready), now)
	if w.volErr != nil {
		st.Message, st.Reason = w.volErr.Error(), "ContainerCreating"
	} else {
		st.Message, st.Reason = "", ""
	}
	return st
}

func setPodCondition(st *corev1.PodStatus, t corev1.PodConditionType, s corev1.ConditionStatus, now metav1.Time) {
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			if st.Conditions[i].Status != s {
				st.Conditions[i].Status = s
				st.Conditions[i].LastTransitionTime = now
			}
			return
		}
	}
	st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: s, LastTransitionTime: now})
}

// writeStatus posts the status when it differs from the last one written,
// retrying on conflicts with a fresh object. It returns the newest pod it
// saw.
func (w *podWorker) writeStatus(pod *corev1.Pod) *corev1.Pod {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods := w.k.cfg.Client.CoreV1().Pods(pod.Namespace)
	for attempt := 0; attempt < 5; attempt++ {
		st := w.status(pod)
		if w.lastWrite != nil && apiequality.Semantic.DeepEqual(*w.lastWrite, st) {
			return pod
		}
		p := pod.DeepCopy()
		p.Status = st
		got, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
		if err == nil {
			w.lastWrite = &st
			return got
		}
		if !apierrors.IsConflict(err) {
			if !apierrors.IsNotFound(err) && ctx.Err() == nil {
				w.k.cfg.Log.Warn("write pod status", "pod", pod.Namespace+"/"+pod.Name, "err", err)
			}
			return pod
		}
		fresh, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil || fresh.UID != w.uid {
			return pod
		}
		pod = fresh
	}
	return pod
}
