package kubelet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
)

// Config configures a Kubelet. Zero durations take the defaults noted.
type Config struct {
	NodeName string
	Client   kubernetes.Interface
	// Images maps container images to local binaries.
	Images ImageMap
	// RootDir holds pods/<uid>/ (removed with each pod) and
	// pvcs/<namespace>/<claim>_<claim uid>/ (kept until the claim is
	// deleted).
	RootDir string
	// LogDir receives <namespace>_<pod>_<container>.log.
	LogDir string
	// IPs hands out pod addresses (127.0.0.0/8 addresses).
	IPs *IPPool
	// HostIP is the node's address (default 127.0.0.1).
	HostIP string
	// Backoff between restarts (default 10s doubling to 5m, reset after
	// 10m of running, as in the kubelet).
	Backoff Backoff
	// ProvisionVolumes creates a PersistentVolume pre-bound to every
	// unbound claim (hostPath: the claim's directory), so claims become
	// Bound once the controller manager's persistent-volume binder runs.
	ProvisionVolumes bool
	// RewriteConfigMapPaths applies the mount path rewrite to the contents
	// of materialised ConfigMap files.
	RewriteConfigMapPaths bool
	// Capacity reported for the node (default 8 CPUs, 16Gi, 110 pods).
	Capacity corev1.ResourceList
	// ShutdownGrace caps the grace period pods get when the kubelet stops
	// (default 10s).
	ShutdownGrace time.Duration
	// LeaseRenew is the node lease renewal interval (default 10s).
	LeaseRenew time.Duration
	// VolumeResync is how often ConfigMap and Secret volumes are compared
	// with their objects besides on change events (default 10s).
	VolumeResync time.Duration
	Clock        clock.WithTicker
	Log          *slog.Logger
}

func (c *Config) setDefaults() {
	if c.HostIP == "" {
		c.HostIP = "127.0.0.1"
	}
	if c.Backoff == (Backoff{}) {
		c.Backoff = Backoff{Initial: 10 * time.Second, Max: 5 * time.Minute, Reset: 10 * time.Minute}
	}
	if c.Capacity == nil {
		c.Capacity = corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("8"),
			corev1.ResourceMemory: resource.MustParse("16Gi"),
			corev1.ResourcePods:   resource.MustParse("110"),
		}
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 10 * time.Second
	}
	if c.LeaseRenew == 0 {
		c.LeaseRenew = 10 * time.Second
	}
	if c.VolumeResync == 0 {
		c.VolumeResync = 10 * time.Second
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// Kubelet is the process kubelet of one node.
type Kubelet struct {
	cfg Config
	ctx context.Context

	pods       corelisters.PodLister
	configMaps corelisters.ConfigMapLister
	secrets    corelisters.SecretLister
	pvcs       corelisters.PersistentVolumeClaimLister
	queue      workqueue.TypedRateLimitingInterface[string]

	mu      sync.Mutex
	workers map[types.UID]*podWorker
	byKey   map[string]types.UID
	wg      sync.WaitGroup
}

// New checks cfg and returns a Kubelet; Run starts it.
func New(cfg Config) (*Kubelet, error) {
	cfg.setDefaults()
	switch {
	case cfg.NodeName == "":
		return nil, errors.New("kubelet: NodeName is required")
	case cfg.Client == nil:
		return nil, errors.New("kubelet: Client is required")
	case cfg.IPs == nil:
		return nil, errors.New("kubelet: IPs is required")
	case cfg.RootDir == "" || cfg.LogDir == "":
		return nil, errors.New("kubelet: RootDir and LogDir are required")
	}
	for _, d := range []string{cfg.RootDir, cfg.LogDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("kubelet: %w", err)
		}
	}
	return &Kubelet{cfg: cfg, workers: map[types.UID]*podWorker{}, byKey: map[string]types.UID{}}, nil
}

// Run registers the node and runs pods until ctx ends, then stops every
// pod's processes (grace capped by ShutdownGrace) before returning.
func (k *Kubelet) Run(ctx context.Context) error {
	k.ctx = ctx
	if err := k.registerNode(ctx); err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactory(k.cfg.Client, 0)
	podInf := factory.Core().V1().Pods()
	k.pods = podInf.Lister()
	k.configMaps = factory.Core().V1().ConfigMaps().Lister()
	k.secrets = factory.Core().V1().Secrets().Lister()
	k.pvcs = factory.Core().V1().PersistentVolumeClaims().Lister()
	k.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	defer k.queue.ShutDown()

	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			k.queue.Add(key)
		}
	}
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }, DeleteFunc: enqueue,
	}); err != nil {
		return err
	}
	resync := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { k.resyncVolumes() }, UpdateFunc: func(any, any) { k.resyncVolumes() }, DeleteFunc: func(any) { k.resyncVolumes() },
	}
	for _, inf := range []cache.SharedIndexInformer{factory.Core().V1().ConfigMaps().Informer(), factory.Core().V1().Secrets().Informer()} {
		if _, err := inf.AddEventHandler(resync); err != nil {
			return err
		}
	}
	provision := func(obj any) {
		if pvc, ok := obj.(*corev1.PersistentVolumeClaim); ok && k.cfg.ProvisionVolumes && pvc.Spec.VolumeName == "" {
			k.wg.Go(func() { k.provision(pvc) })
		}
	}
	if _, err := factory.Core().V1().PersistentVolumeClaims().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    provision,
		UpdateFunc: func(_, o any) { provision(o) },
		DeleteFunc: k.claimDeleted,
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("kubelet: %v cache did not sync", typ)
		}
	}

	var bg sync.WaitGroup
	bg.Go(func() { k.heartbeat(ctx) })
	bg.Go(func() {
		for k.processNext() {
		}
	})
	k.cfg.Log.Info("process kubelet running", "node", k.cfg.NodeName)
	<-ctx.Done()
	// No event handler runs after this, so nothing adds to k.wg while it
	// is waited for below.
	factory.Shutdown()
	k.queue.ShutDown()
	bg.Wait()
	k.mu.Lock()
	for _, w := range k.workers {
		w.shutdown()
	}
	k.mu.Unlock()
	k.wg.Wait()
	return nil
}

func (k *Kubelet) processNext() bool {
	key, quit := k.queue.Get()
	if quit {
		return false
	}
	defer k.queue.Done(key)
	if err := k.sync(key); err != nil {
		k.cfg.Log.Warn("sync pod", "pod", key, "err", err)
		k.queue.AddRateLimited(key)
		return true
	}
	k.queue.Forget(key)
	return true
}

func (k *Kubelet) sync(key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	pod, err := k.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		k.podGone(key, "")
		return nil
	}
	if err != nil {
		return err
	}
	if pod.Spec.NodeName == "" {
		return k.schedule(pod)
	}
	if pod.Spec.NodeName != k.cfg.NodeName {
		return nil
	}
	k.podGone(key, pod.UID) // a recreated pod with the same name replaces the old one
	k.mu.Lock()
	w, ok := k.workers[pod.UID]
	k.mu.Unlock()
	if ok {
		w.update(pod)
		return nil
	}
	if pod.DeletionTimestamp != nil {
		// Nothing of it runs here (finished, or the kubelet restarted):
		// remove it.
		return k.deletePod(pod)
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	w = newPodWorker(k, pod)
	k.mu.Lock()
	k.workers[pod.UID] = w
	k.byKey[key] = pod.UID
	k.mu.Unlock()
	k.wg.Go(func() {
		w.run(pod)
		k.mu.Lock()
		delete(k.workers, pod.UID)
		if k.byKey[key] == pod.UID {
			delete(k.byKey, key)
		}
		k.mu.Unlock()
	})
	return nil
}

// podGone tells the worker of key, unless it runs pod keep, that its pod
// left the API.
func (k *Kubelet) podGone(key string, keep types.UID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	uid, ok := k.byKey[key]
	if !ok || uid == keep {
		return
	}
	if w, ok := k.workers[uid]; ok {
		w.markGone()
	}
	delete(k.byKey, key)
}

func (k *Kubelet) resyncVolumes() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, w := range k.workers {
		w.requestResync()
	}
}

// schedule binds pod to this node when its nodeSelector matches; the
// rest of the scheduler's constraints (affinity, taints, resources) are
// ignored: there is one node.
func (k *Kubelet) schedule(pod *corev1.Pod) error {
	if s := pod.Spec.SchedulerName; s != "" && s != corev1.DefaultSchedulerName {
		return nil
	}
	if !labels.SelectorFromSet(pod.Spec.NodeSelector).Matches(labels.Set(k.nodeLabels())) {
		k.cfg.Log.Info("pod not scheduled: nodeSelector does not match the node", "pod", pod.Namespace+"/"+pod.Name)
		return nil
	}
	err := k.cfg.Client.CoreV1().Pods(pod.Namespace).Bind(k.ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: k.cfg.NodeName},
	}, metav1.CreateOptions{})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	return nil
}

func (k *Kubelet) deletePod(pod *corev1.Pod) error {
	uid := pod.UID
	err := k.cfg.Client.CoreV1().Pods(pod.Namespace).Delete(context.WithoutCancel(k.ctx), pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptrTo[int64](0),
		Preconditions:      &metav1.Preconditions{UID: &uid},
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

func (k *Kubelet) nodeLabels() map[string]string {
	return map[string]string{
		corev1.LabelHostname:                 k.cfg.NodeName,
		corev1.LabelOSStable:                 "linux",
		corev1.LabelArchStable:               runtime.GOARCH,
		"node.purplerain.io/process-kubelet": "true",
	}
}

// ConfigMap implements Objects from the informer cache.
func (k *Kubelet) ConfigMap(ns, name string) (*corev1.ConfigMap, error) {
	return k.configMaps.ConfigMaps(ns).Get(name)
}

// Secret implements Objects from the informer cache.
func (k *Kubelet) Secret(ns, name string) (*corev1.Secret, error) {
	return k.secrets.Secrets(ns).Get(name)
}

func (k *Kubelet) podDir(uid types.UID) string {
	return filepath.Join(k.cfg.RootDir, "pods", string(uid))
}

// ClaimDir is the directory standing in for a PersistentVolumeClaim. It is
// named after the claim and its UID, so a claim deleted and created again
// under the same name starts empty, as a new volume would.
func ClaimDir(root, namespace, claim string, uid types.UID) string {
	return filepath.Join(root, "pvcs", namespace, claim+"_"+string(uid))
}

// claimDir is the directory of a claim that exists in the cache (a
// placeholder name otherwise: setupVolumes refuses pods whose claims are
// missing).
func (k *Kubelet) claimDir(ns, claim string) string {
	pvc, err := k.pvcs.PersistentVolumeClaims(ns).Get(claim)
	if err != nil {
		return ClaimDir(k.cfg.RootDir, ns, claim, "missing")
	}
	return ClaimDir(k.cfg.RootDir, ns, claim, pvc.UID)
}

// removeClaimDir deletes a deleted claim's directory.
func (k *Kubelet) removeClaimDir(pvc *corev1.PersistentVolumeClaim) {
	dir := ClaimDir(k.cfg.RootDir, pvc.Namespace, pvc.Name, pvc.UID)
	if err := os.RemoveAll(dir); err != nil {
		k.cfg.Log.Warn("remove claim directory", "dir", dir, "err", err)
	}
}

// registerNode creates or updates the Node, drops the not-ready taint the
// API server's admission adds to new nodes (no node lifecycle controller
// runs to remove it), and reports it Ready.
func (k *Kubelet) registerNode(ctx context.Context) error {
	nodes := k.cfg.Client.CoreV1().Nodes()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: k.cfg.NodeName, Labels: k.nodeLabels()}}
	got, err := nodes.Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = nodes.Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("register node: %w", err)
	}
	var taints []corev1.Taint
	for _, t := range got.Spec.Taints {
		if t.Key != corev1.TaintNodeNotReady && t.Key != corev1.TaintNodeUnreachable {
			taints = append(taints, t)
		}
	}
	if len(taints) != len(got.Spec.Taints) {
		got.Spec.Taints = taints
		if got, err = nodes.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("remove not-ready taint: %w", err)
		}
	}
	return k.updateNodeStatus(ctx)
}

func (k *Kubelet) updateNodeStatus(ctx context.Context) error {
	nodes := k.cfg.Client.CoreV1().Nodes()
	node, err := nodes.Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("node status: %w", err)
	}
	now := metav1.NewTime(k.cfg.Clock.Now())
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		c := corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
		for _, old := range node.Status.Conditions {
			if old.Type == t && old.Status == s {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	node.Status.Conditions = []corev1.NodeCondition{
		cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "process kubelet is posting ready status"),
		cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "not measured by the process kubelet"),
		cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "not measured by the process kubelet"),
		cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "not measured by the process kubelet"),
	}
	node.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: k.cfg.HostIP},
		{Type: corev1.NodeHostName, Address: k.cfg.NodeName},
	}
	node.Status.Capacity = k.cfg.Capacity.DeepCopy()
	node.Status.Allocatable = k.cfg.Capacity.DeepCopy()
	node.Status.NodeInfo = corev1.NodeSystemInfo{
		OperatingSystem: "linux", Architecture: runtime.GOARCH,
		KubeletVersion: "process-kubelet", ContainerRuntimeVersion: "process://local",
	}
	if _, err := nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("node status: %w", err)
	}
	return nil
}

// heartbeat renews the node lease every LeaseRenew and posts the node
// status every sixth renewal.
func (k *Kubelet) heartbeat(ctx context.Context) {
	t := k.cfg.Clock.NewTicker(k.cfg.LeaseRenew)
	defer t.Stop()
	for i := 0; ; i++ {
		if err := k.renewLease(ctx); err != nil && ctx.Err() == nil {
			k.cfg.Log.Warn("renew node lease", "err", err)
		}
		if i > 0 && i%6 == 0 {
			if err := k.updateNodeStatus(ctx); err != nil && ctx.Err() == nil {
				k.cfg.Log.Warn("update node status", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

func (k *Kubelet) renewLease(ctx context.Context) error {
	leases := k.cfg.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(k.cfg.Clock.Now())
	l, err := leases.Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		node, err := k.cfg.Client.CoreV1().Nodes().Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: k.cfg.NodeName, OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
			}}},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity: &k.cfg.NodeName, LeaseDurationSeconds: ptrTo[int32](40), RenewTime: &now,
			},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime = &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}
