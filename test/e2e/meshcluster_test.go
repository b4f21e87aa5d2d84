package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/resources"
	"github.com/purplerain/mesh-operator/hack/localcluster/kubelet"
)

// newNamespace creates a namespace for one spec and removes it after.
func newNamespace(prefix string) string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	Expect(k8s.Create(context.Background(), ns)).To(Succeed())
	DeferCleanup(func() { _ = k8s.Delete(context.Background(), ns) })
	return ns.Name
}

// diskCluster is a 3+1 MeshCluster keeping its logs on PVCs that are
// retained when the cluster goes.
const diskCluster = `apiVersion: mesh.purplerain.io/v1alpha1
kind: MeshCluster
metadata:
  name: disk
spec:
  nodes: 3
  standby:
    replicas: 1
  storage:
    mode: Disk
    size: 1Gi
    pvcRetention: Retain
`

// applyManifest applies a manifest into ns with kubectl.
func applyManifest(manifest, ns string) {
	GinkgoHelper()
	cmd := exec.Command("kubectl", "--kubeconfig="+lc.Kubeconfig, "apply", "-n", ns, "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	out, err := cmd.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "kubectl apply: %s", out)
}

// applySample applies a file of config/samples into ns with kubectl, as a
// person would, and returns when the apply returned.
func applySample(file, ns string) {
	GinkgoHelper()
	kubectl("apply", "-n", ns, "-f", filepath.Join(repoRoot, "config", "samples", file))
}

func getMC(ns, name string) *meshv1.MeshCluster {
	GinkgoHelper()
	mc := &meshv1.MeshCluster{}
	Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, mc)).To(Succeed())
	return mc
}

// waitAvailable waits until the MeshCluster's Available condition is True
// for its current generation.
func waitAvailable(ctx context.Context, ns, name string, timeout time.Duration) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		mc := &meshv1.MeshCluster{}
		g.Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, mc)).To(Succeed())
		c := meta.FindStatusCondition(mc.Status.Conditions, meshv1.ConditionAvailable)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue), "Available: %s", c.Message)
		g.Expect(c.ObservedGeneration).To(Equal(mc.Generation))
	}).WithContext(ctx).WithTimeout(timeout).WithPolling(100 * time.Millisecond).Should(Succeed())
}

func clusterPods(ns, name string) []corev1.Pod {
	GinkgoHelper()
	var pods corev1.PodList
	Expect(k8s.List(context.Background(), &pods, client.InNamespace(ns), client.MatchingLabels{resources.LabelInstance: name})).To(Succeed())
	return pods.Items
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func pidOf(p *corev1.Pod) int {
	GinkgoHelper()
	Expect(p.Status.ContainerStatuses).To(HaveLen(1))
	id := strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "process://")
	pid, err := strconv.Atoi(id)
	Expect(err).NotTo(HaveOccurred(), "containerID %q", p.Status.ContainerStatuses[0].ContainerID)
	return pid
}

var _ = Describe("MeshCluster on a local cluster", Ordered, func() {
	var ns string
	const name = "demo"

	BeforeAll(func() {
		ns = newNamespace("e2e-demo")
	})

	It("(a) reaches Available after kubectl apply of the 3+1 sample", func(ctx SpecContext) {
		start := time.Now()
		applySample("mesh_v1alpha1_meshcluster.yaml", ns)
		waitAvailable(ctx, ns, name, 2*time.Minute)
		record("apply to Available (3 nodes + 1 standby)", time.Since(start))

		mc := getMC(ns, name)
		Expect(mc.Status.ReadyNodes).To(BeNumerically(">=", 3))
		pods := clusterPods(ns, name)
		Expect(pods).To(HaveLen(4))
		ips := map[string]bool{}
		for i := range pods {
			p := &pods[i]
			Expect(podReady(p)).To(BeTrue(), "pod %s ready", p.Name)
			Expect(p.Status.PodIP).To(HavePrefix("127.0."), "pod %s runs on its own loopback address", p.Name)
			Expect(ips).NotTo(HaveKey(p.Status.PodIP), "pod addresses are distinct")
			ips[p.Status.PodIP] = true
			Expect(syscall.Kill(pidOf(p), 0)).To(Succeed(), "pod %s has a live process", p.Name)
		}
		var sts appsv1.StatefulSet
		Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &sts)).To(Succeed())
		Expect(sts.Status.ReadyReplicas).To(Equal(int32(4)))
		out := kubectl("get", "-n", ns, "meshclusters,statefulsets,pods", "-o", "wide")
		fmt.Fprintln(GinkgoWriter, out)
	})

	It("a deleted pod is recreated by the StatefulSet controller and becomes ready again", func(ctx SpecContext) {
		victim := &corev1.Pod{}
		Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name + "-1"}, victim)).To(Succeed())
		oldPID := pidOf(victim)
		start := time.Now()
		Expect(k8s.Delete(context.Background(), victim)).To(Succeed())
		Eventually(func(g Gomega) {
			p := &corev1.Pod{}
			g.Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name + "-1"}, p)).To(Succeed())
			g.Expect(p.UID).NotTo(Equal(victim.UID))
			g.Expect(podReady(p)).To(BeTrue())
		}).WithContext(ctx).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
		record("pod delete to replacement ready", time.Since(start))
		Expect(syscall.Kill(oldPID, 0)).To(MatchError(syscall.ESRCH), "the deleted pod's process is gone")
		waitAvailable(ctx, ns, name, time.Minute)
	})

	It("a SIGKILLed node process is restarted by the kubelet and the pod is ready again", func(ctx SpecContext) {
		p := &corev1.Pod{}
		Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name + "-0"}, p)).To(Succeed())
		restarts := p.Status.ContainerStatuses[0].RestartCount
		start := time.Now()
		Expect(syscall.Kill(pidOf(p), syscall.SIGKILL)).To(Succeed())
		Eventually(func(g Gomega) {
			got := &corev1.Pod{}
			g.Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name + "-0"}, got)).To(Succeed())
			g.Expect(got.UID).To(Equal(p.UID), "same pod, restarted in place")
			cs := got.Status.ContainerStatuses[0]
			g.Expect(cs.RestartCount).To(Equal(restarts + 1))
			g.Expect(cs.LastTerminationState.Terminated).NotTo(BeNil())
			g.Expect(cs.LastTerminationState.Terminated.ExitCode).To(Equal(int32(128 + 9)))
			g.Expect(podReady(got)).To(BeTrue())
		}).WithContext(ctx).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
		record("SIGKILL to pod ready again (restart in place)", time.Since(start))
		waitAvailable(ctx, ns, name, time.Minute)
	})

	It("kubectl scale 3→5 adds ready nodes", func(ctx SpecContext) {
		start := time.Now()
		kubectl("scale", "-n", ns, "meshcluster/"+name, "--replicas=5")
		Eventually(func(g Gomega) {
			mc := &meshv1.MeshCluster{}
			g.Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, mc)).To(Succeed())
			g.Expect(mc.Status.ObservedGeneration).To(Equal(mc.Generation))
			g.Expect(meta.IsStatusConditionTrue(mc.Status.Conditions, meshv1.ConditionAvailable)).To(BeTrue())
			pods := clusterPods(ns, name)
			g.Expect(pods).To(HaveLen(6))
			for i := range pods {
				g.Expect(podReady(&pods[i])).To(BeTrue(), "pod %s", pods[i].Name)
			}
		}).WithContext(ctx).WithTimeout(2 * time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
		record("scale 3→5 to Available", time.Since(start))
	})

	It("a changed image rolls every pod and the cluster is Available again", func(ctx SpecContext) {
		before := map[string]types.UID{}
		for _, p := range clusterPods(ns, name) {
			before[p.Name] = p.UID
		}
		start := time.Now()
		// Another tag of the same repository maps to the same local binary.
		kubectl("patch", "-n", ns, "meshcluster/"+name, "--type=merge", "-p", `{"spec":{"image":"ghcr.io/purplerain/mesh-node:e2e-rolled"}}`)
		Eventually(func(g Gomega) {
			pods := clusterPods(ns, name)
			g.Expect(pods).To(HaveLen(len(before)))
			for i := range pods {
				p := &pods[i]
				g.Expect(p.Spec.Containers[0].Image).To(Equal("ghcr.io/purplerain/mesh-node:e2e-rolled"), "pod %s", p.Name)
				g.Expect(p.UID).NotTo(Equal(before[p.Name]), "pod %s replaced", p.Name)
				g.Expect(podReady(p)).To(BeTrue(), "pod %s", p.Name)
			}
		}).WithContext(ctx).WithTimeout(3 * time.Minute).WithPolling(200 * time.Millisecond).Should(Succeed())
		waitAvailable(ctx, ns, name, time.Minute)
		record(fmt.Sprintf("rolling update of %d pods to Available", len(before)), time.Since(start))
	})

	It("(e) deleting the MeshCluster removes its children", func(ctx SpecContext) {
		mc := getMC(ns, name)
		Expect(k8s.Delete(context.Background(), mc)).To(Succeed())
		expectChildrenGone(ctx, ns, name)
	})
})

// expectChildrenGone waits until the cluster's StatefulSet, Services,
// ConfigMap, PDB and pods are gone and no process of its pods is left.
func expectChildrenGone(ctx context.Context, ns, name string) {
	GinkgoHelper()
	pids := map[string]int{}
	for _, p := range clusterPods(ns, name) {
		if len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running != nil {
			pids[p.Name] = pidOf(&p)
		}
	}
	start := time.Now()
	Eventually(func(g Gomega) {
		for _, obj := range []client.Object{
			&meshv1.MeshCluster{ObjectMeta: metav1.ObjectMeta{Name: name}},
			&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: name}},
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}},
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name + "-nodes"}},
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name + "-config"}},
			&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: name}},
		} {
			err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: obj.GetName()}, obj)
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "%T %s still there (err %v)", obj, obj.GetName(), err)
		}
		g.Expect(clusterPods(ns, name)).To(BeEmpty())
	}).WithContext(ctx).WithTimeout(2 * time.Minute).WithPolling(200 * time.Millisecond).Should(Succeed())
	record("MeshCluster delete to children gone", time.Since(start))
	for pod, pid := range pids {
		Expect(syscall.Kill(pid, 0)).To(MatchError(syscall.ESRCH), "process of %s (pid %d) is gone", pod, pid)
	}
}

var _ = Describe("MeshCluster with disk storage", Ordered, func() {
	var ns string
	const name = "disk"

	BeforeAll(func() { ns = newNamespace("e2e-disk") })

	It("(e) deleting the MeshCluster removes everything but the retained PVCs and their data", func(ctx SpecContext) {
		applyManifest(diskCluster, ns)
		waitAvailable(ctx, ns, name, 2*time.Minute)
		var pvcs corev1.PersistentVolumeClaimList
		Expect(k8s.List(context.Background(), &pvcs, client.InNamespace(ns))).To(Succeed())
		Expect(pvcs.Items).To(HaveLen(4), "one data PVC per pod")
		Eventually(func(g Gomega) {
			var got corev1.PersistentVolumeClaimList
			g.Expect(k8s.List(ctx, &got, client.InNamespace(ns))).To(Succeed())
			for _, p := range got.Items {
				g.Expect(p.Status.Phase).To(Equal(corev1.ClaimBound), "PVC %s bound to the kubelet's volume", p.Name)
			}
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())

		// Each pod's /var/lib/mesh is its claim's directory: a file written
		// there must survive the cluster's deletion.
		var claim corev1.PersistentVolumeClaim
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "data-" + name + "-0"}, &claim)).To(Succeed())
		marker := filepath.Join(kubelet.ClaimDir(filepath.Join(artifacts, "kubelet"), ns, claim.Name, claim.UID), "e2e-marker")
		Expect(os.WriteFile(marker, []byte("kept"), 0o644)).To(Succeed())
		// The pod's node.json names the claim's directory as its storage
		// dir: the kubelet rewrote the mount path /var/lib/mesh.
		pod := &corev1.Pod{}
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name + "-0"}, pod)).To(Succeed())
		nodeJSON, err := os.ReadFile(filepath.Join(artifacts, "kubelet", "pods", string(pod.UID), "volumes", "config", "node.json"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(nodeJSON)).To(ContainSubstring(filepath.Dir(marker)))
		Expect(string(nodeJSON)).NotTo(ContainSubstring("/var/lib/mesh"))

		Expect(k8s.Delete(context.Background(), getMC(ns, name))).To(Succeed())
		expectChildrenGone(ctx, ns, name)
		Consistently(func(g Gomega) {
			var after corev1.PersistentVolumeClaimList
			g.Expect(k8s.List(context.Background(), &after, client.InNamespace(ns))).To(Succeed())
			g.Expect(after.Items).To(HaveLen(4))
			for _, p := range after.Items {
				g.Expect(p.DeletionTimestamp).To(BeNil(), "PVC %s", p.Name)
			}
		}).WithContext(ctx).WithTimeout(3 * time.Second).Should(Succeed())
		Expect(os.ReadFile(marker)).To(Equal([]byte("kept")))

		By("deleting a retained claim removes its directory and volume")
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: claim.Name}, &claim)).To(Succeed())
		pvName := claim.Spec.VolumeName
		Expect(pvName).NotTo(BeEmpty())
		Expect(k8s.Delete(ctx, &claim)).To(Succeed())
		Eventually(func() error { _, err := os.Stat(filepath.Dir(marker)); return err }).
			WithContext(ctx).WithTimeout(30 * time.Second).Should(MatchError(os.ErrNotExist))
		Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Name: pvName}, &corev1.PersistentVolume{}))
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(BeTrue())
	})
})
