package controllers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/purplerain/mesh-operator/controllers/resources"
	"github.com/purplerain/mesh-operator/engine/identity"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/runtime"
)

// testKubelet plays the StatefulSet controller and the kubelet for one
// cluster: it creates the pods the StatefulSet asks for, runs a real
// in-process mesh node for each (node/runtime, the code cmd/mesh-node
// runs) on its own loopback address 127.0.1.x, and reports readiness from
// the node's /readyz into the pod's status and the StatefulSet's status.
type testKubelet struct {
	cluster string
	dir     string

	mu   sync.Mutex
	pods map[string]*runningPod
	// firstRevision is the StatefulSet's first template revision.
	firstRevision string
	stop          chan struct{}
	done          chan struct{}
}

type runningPod struct {
	ip string
	// revision is the pod template revision the pod was made from.
	revision string
	cancel   context.CancelFunc
	exited   chan error
	// dead: the node was stopped by the test (kill); the pod stays, not
	// ready, until revive.
	dead bool
	// notReady: the node runs but the kubelet reports the pod not ready
	// (a failing probe, a node cut off from the kubelet).
	notReady atomic.Bool
}

// nextIP hands out loopback addresses; 127.0.1.0/24 is left to this
// suite (the local cluster of the end-to-end tests uses 127.0.0.x).
// MESH_TEST_NET (e.g. "127.0.21") moves it, so two runs of the suite on one
// machine do not collide on the nodes' fixed ports.
var ipCounter atomic.Int32

var testNet = func() string {
	if v := os.Getenv("MESH_TEST_NET"); v != "" {
		return v
	}
	return "127.0.1"
}()

func nextIP() string { return fmt.Sprintf("%s.%d", testNet, 10+ipCounter.Add(1)) }

func startKubelet(cluster string) *testKubelet {
	k := &testKubelet{cluster: cluster, dir: GinkgoT().TempDir(), pods: map[string]*runningPod{}, stop: make(chan struct{}), done: make(chan struct{})}
	go k.loop()
	DeferCleanup(k.shutdown)
	return k
}

func (k *testKubelet) loop() {
	defer GinkgoRecover()
	defer close(k.done)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-k.stop:
			return
		case <-tick.C:
			k.sync()
		}
	}
}

// sync makes pods and nodes match the StatefulSet and reports readiness.
func (k *testKubelet) sync() {
	ctx := context.Background()
	sts := &appsv1.StatefulSet{}
	if err := k8sClient.Get(ctx, key(k.cluster), sts); err != nil || sts.DeletionTimestamp != nil {
		if err == nil || apierrors.IsNotFound(err) {
			k.stopAll() // the StatefulSet is going: so are its pods
		}
		return
	}
	replicas := int(*sts.Spec.Replicas)
	ready, updated := int32(0), int32(0)
	rev := templateRevision(sts)
	k.mu.Lock()
	if k.firstRevision == "" {
		k.firstRevision = rev
	}
	k.mu.Unlock()
	// The StatefulSet shrank: its highest ordinals go.
	k.mu.Lock()
	var gone []string
	for name := range k.pods {
		var ord int
		if _, err := fmt.Sscanf(strings.TrimPrefix(name, k.cluster+"-"), "%d", &ord); err == nil && ord >= replicas {
			gone = append(gone, name)
		}
	}
	k.mu.Unlock()
	for _, name := range gone {
		k.stopPod(name)
	}
	for i := range replicas {
		name := fmt.Sprintf("%s-%d", k.cluster, i)
		k.mu.Lock()
		rp := k.pods[name]
		k.mu.Unlock()
		if rp != nil {
			// Someone (the operator restarting a drained node) deleted
			// the pod: its node stops and a fresh one starts next round.
			pod := &corev1.Pod{}
			if err := k8sClient.Get(ctx, key(name), pod); apierrors.IsNotFound(err) || (err == nil && pod.DeletionTimestamp != nil) {
				k.stopPod(name)
				continue
			}
		}
		if rp == nil {
			var err error
			if rp, err = k.startPod(ctx, sts, name); err != nil {
				fmt.Fprintf(GinkgoWriter, "test kubelet: start %s: %v\n", name, err)
				continue
			}
			k.mu.Lock()
			k.pods[name] = rp
			k.mu.Unlock()
		}
		if k.reportReady(ctx, name, rp) {
			ready++
		}
		if rp.revision == rev {
			updated++
		}
	}
	// As the StatefulSet controller reports an OnDelete StatefulSet: the
	// current revision stays the first one.
	sts.Status = appsv1.StatefulSetStatus{
		ObservedGeneration: sts.Generation, Replicas: int32(replicas), ReadyReplicas: ready, AvailableReplicas: ready,
		CurrentReplicas: int32(replicas) - updated, UpdatedReplicas: updated, CurrentRevision: k.firstRevision, UpdateRevision: rev,
	}
	if rev == k.firstRevision {
		sts.Status.CurrentReplicas = int32(replicas)
	}
	_ = k8sClient.Status().Update(ctx, sts)
}

// templateRevision names a pod template revision as the StatefulSet
// controller does: <statefulset>-<hash of the template>. Pods carry it in
// their controller-revision-hash label.
func templateRevision(sts *appsv1.StatefulSet) string {
	b, err := json.Marshal(sts.Spec.Template)
	Expect(err).NotTo(HaveOccurred())
	h := fnv.New32a()
	_, _ = h.Write(b)
	return fmt.Sprintf("%s-%x", sts.Name, h.Sum32())
}

// startPod creates the pod object and runs its node with the files the
// pod would have mounted: the ConfigMap and the cluster key Secret.
func (k *testKubelet) startPod(ctx context.Context, sts *appsv1.StatefulSet, name string) (*runningPod, error) {
	cm := &corev1.ConfigMap{}
	if err := k8sClient.Get(ctx, key(resources.ConfigMapName(clusterOf(k.cluster))), cm); err != nil {
		return nil, err
	}
	secret := &corev1.Secret{}
	if err := k8sClient.Get(ctx, key(resources.ClusterKeySecretName(clusterOf(k.cluster))), secret); err != nil {
		return nil, err
	}
	dir := filepath.Join(k.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// The pod's mount paths (/etc/mesh, /etc/mesh-cluster) become files in
	// the pod's directory.
	doc := strings.NewReplacer(resources.ConfigDir+"/", dir+"/", resources.ClusterKeyDir+"/", dir+"/", resources.PodInfoDir+"/", dir+"/", resources.DataDir, filepath.Join(dir, "data")).Replace(cm.Data[nodeconfig.FileName])
	files := map[string]string{
		nodeconfig.FileName:             doc,
		resources.OperatorPublicKeyFile: cm.Data[resources.OperatorPublicKeyFile],
		identity.SecretPrivateKey:       string(secret.Data[identity.SecretPrivateKey]),
		// The downward API's labels file (/etc/mesh-podinfo/labels).
		resources.PodLabelsFile: downwardLabels(sts.Spec.Template.Labels),
	}
	for f, data := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(data), 0o600); err != nil {
			return nil, err
		}
	}
	cfg, err := nodeconfig.Load(filepath.Join(dir, nodeconfig.FileName))
	if err != nil {
		return nil, err
	}

	ip := nextIP()
	rev := templateRevision(sts)
	labels := map[string]string{appsv1.ControllerRevisionHashLabelKey: rev}
	for k, v := range sts.Spec.Template.Labels {
		labels[k] = v
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "mesh-node", Image: "mesh-node"}}},
	}
	if err := k8sClient.Create(ctx, pod); err != nil {
		return nil, err
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}}
	if err := k8sClient.Status().Update(ctx, pod); err != nil {
		return nil, err
	}

	runCtx, cancel := context.WithCancel(context.Background())
	rp := &runningPod{ip: ip, revision: rev, cancel: cancel, exited: make(chan error, 1)}
	hp := func(port int) string { return net.JoinHostPort(ip, fmt.Sprint(port)) }
	// A gated cluster's wire and admin ports are proxies the test can
	// pause (migration_test.go).
	wire, err := gateWire(runCtx, k.cluster, name, hp(nodeconfig.WirePort))
	if err != nil {
		cancel()
		return nil, err
	}
	admin, err := gateAdmin(runCtx, k.cluster, name, hp(nodeconfig.AdminPort))
	if err != nil {
		cancel()
		return nil, err
	}
	go func() {
		rp.exited <- runtime.Run(runCtx, runtime.Options{
			Config: cfg, Name: name,
			AdminAddr: admin, DataAddr: hp(nodeconfig.DataPort), WireAddr: wire,
			DrainTimeout: 2 * time.Second,
		})
	}()
	return rp, nil
}

// reportReady probes the node's /readyz and writes the pod's Ready
// condition when it changed.
func (k *testKubelet) reportReady(ctx context.Context, name string, rp *runningPod) bool {
	ready := false
	if !rp.notReady.Load() {
		hc := http.Client{Timeout: 500 * time.Millisecond}
		if resp, err := hc.Get("http://" + net.JoinHostPort(rp.ip, fmt.Sprint(nodeconfig.AdminPort)) + "/readyz"); err == nil {
			ready = resp.StatusCode == http.StatusOK
			resp.Body.Close()
		}
	}
	pod := &corev1.Pod{}
	if err := k8sClient.Get(ctx, key(name), pod); err != nil {
		return false
	}
	want := corev1.ConditionFalse
	if ready {
		want = corev1.ConditionTrue
	}
	if len(pod.Status.Conditions) == 0 || pod.Status.Conditions[0].Status != want {
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: want}}
		_ = k8sClient.Status().Update(ctx, pod)
	}
	return ready
}

// stopPod stops a pod's node (if still running) and deletes the pod.
func (k *testKubelet) stopPod(name string) {
	k.mu.Lock()
	rp := k.pods[name]
	delete(k.pods, name)
	k.mu.Unlock()
	if rp != nil && !rp.dead {
		rp.cancel()
		select {
		case <-rp.exited:
		case <-time.After(15 * time.Second):
			Fail("node " + name + " did not stop within 15s")
		}
	}
	_ = k8sClient.Delete(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}, client.GracePeriodSeconds(0))
}

// kill stops a pod's node and leaves the pod in place: its readiness
// probe fails, as for a crashed or hung process.
func (k *testKubelet) kill(name string) {
	k.mu.Lock()
	rp := k.pods[name]
	k.mu.Unlock()
	if rp == nil || rp.dead {
		return
	}
	rp.cancel()
	<-rp.exited
	k.mu.Lock()
	rp.dead = true
	k.mu.Unlock()
}

// markNotReady keeps a pod's node running but reports the pod not ready.
func (k *testKubelet) markNotReady(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if rp := k.pods[name]; rp != nil {
		rp.notReady.Store(true)
	}
}

// revive replaces a killed pod by a fresh one (new address, empty memory).
func (k *testKubelet) revive(name string) { k.stopPod(name) }

// ip is the address of a pod's node.
func (k *testKubelet) ip(name string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	if rp := k.pods[name]; rp != nil {
		return rp.ip
	}
	return ""
}

// dataAddrs are the data API addresses of the running nodes.
func (k *testKubelet) dataAddrs() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, rp := range k.pods {
		out = append(out, net.JoinHostPort(rp.ip, fmt.Sprint(nodeconfig.DataPort)))
	}
	return out
}

func (k *testKubelet) shutdown() {
	close(k.stop)
	<-k.done
	k.stopAll()
}

// stopAll stops every node (SIGTERM-like: the runtime drains) and deletes
// its pod.
func (k *testKubelet) stopAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for name, rp := range k.pods {
		delete(k.pods, name)
		rp.cancel()
		if rp.dead {
			_ = k8sClient.Delete(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}, client.GracePeriodSeconds(0))
			continue
		}
		select {
		case err := <-rp.exited:
			if err != nil && !errors.Is(err, context.Canceled) {
				fmt.Fprintf(GinkgoWriter, "test kubelet: node %s stopped: %v\n", name, err)
			}
		case <-time.After(15 * time.Second):
			Fail("node " + name + " did not stop within 15s")
		}
		_ = k8sClient.Delete(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}, client.GracePeriodSeconds(0))
	}
}

// downwardLabels renders labels as the kubelet's downward API volume
// does: one key="Go-quoted value" a line, sorted by key.
func downwardLabels(labels map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		fmt.Fprintf(&b, "%s=%q\n", k, labels[k])
	}
	return b.String()
}
