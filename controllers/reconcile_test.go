package controllers_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers"
	"github.com/purplerain/mesh-operator/controllers/resources"
	"github.com/purplerain/mesh-operator/engine/identity"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
)

const (
	timeout  = 30 * time.Second
	interval = 100 * time.Millisecond
)

func newCluster(name string) *meshv1.MeshCluster {
	mc := &meshv1.MeshCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	mc.Spec.Nodes = 3
	mc.Spec.Standby.Replicas = ptrTo[int32](1)
	mc.Spec.Shards.Count = 8
	return mc
}

func key(name string) client.ObjectKey { return client.ObjectKey{Namespace: "default", Name: name} }

func getSTS(name string) func(g Gomega) *appsv1.StatefulSet {
	return func(g Gomega) *appsv1.StatefulSet {
		sts := &appsv1.StatefulSet{}
		g.Expect(k8sClient.Get(context.Background(), key(name), sts)).To(Succeed())
		return sts
	}
}

func getCluster(g Gomega, name string) *meshv1.MeshCluster {
	mc := &meshv1.MeshCluster{}
	g.Expect(k8sClient.Get(context.Background(), key(name), mc)).To(Succeed())
	return mc
}

func expectOwnedBy(obj client.Object, mc *meshv1.MeshCluster) {
	refs := obj.GetOwnerReferences()
	ExpectWithOffset(1, refs).To(HaveLen(1), "%s %s", obj.GetObjectKind().GroupVersionKind().Kind, obj.GetName())
	ExpectWithOffset(1, refs[0].UID).To(Equal(mc.UID))
	ExpectWithOffset(1, refs[0].Kind).To(Equal("MeshCluster"))
	ExpectWithOffset(1, *refs[0].Controller).To(BeTrue())
}

// markPodsReady plays the StatefulSet controller and kubelet: every pod of
// the current revision exists and is ready.
func markPodsReady(name string, ready int32) {
	Eventually(func(g Gomega) {
		sts := getSTS(name)(g)
		replicas := *sts.Spec.Replicas
		sts.Status = appsv1.StatefulSetStatus{
			ObservedGeneration: sts.Generation,
			Replicas:           replicas,
			ReadyReplicas:      ready,
			AvailableReplicas:  ready,
			CurrentReplicas:    replicas,
			UpdatedReplicas:    replicas,
			CurrentRevision:    "r1",
			UpdateRevision:     "r1",
		}
		g.Expect(k8sClient.Status().Update(context.Background(), sts)).To(Succeed())
	}, timeout, interval).Should(Succeed())
}

func eventsFor(g Gomega, name string) []eventsv1.Event {
	list := &eventsv1.EventList{}
	g.Expect(k8sClient.List(context.Background(), list, client.InNamespace("default"))).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Kind == "MeshCluster" && e.Regarding.Name == name {
			out = append(out, e)
		}
	}
	return out
}

var _ = Describe("MeshCluster reconcile", func() {
	ctx := context.Background()

	Describe("children", func() {
		var (
			mc    *meshv1.MeshCluster
			alpha string
			n     int
		)
		BeforeEach(func() {
			// A fresh name per spec: the garbage collector may still be
			// deleting the previous spec's children.
			n++
			alpha = fmt.Sprintf("alpha-%d", n)
			mc = newCluster(alpha)
			mc.Spec.Standby.AckPolicy = meshv1.AckStandby
			mc.Spec.Storage.Mode = meshv1.StorageDisk
			size := resource.MustParse("2Gi")
			mc.Spec.Storage.Size = &size
			mc.Spec.Adapter = &meshv1.AdapterSpec{Type: meshv1.AdapterRedis, URL: "redis://redis:6379", SecretRef: &corev1.LocalObjectReference{Name: "redis-creds"}}
			mc.Spec.Daemons = []meshv1.DaemonSpec{{Name: "count", Kind: meshv1.DaemonCounter, Shards: &meshv1.ShardSelector{IDs: []int32{0, 1}}}}
			Expect(k8sClient.Create(ctx, mc)).To(Succeed())
			DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, mc))).To(Succeed()) })
		})

		It("creates the StatefulSet, Services, ConfigMap and PDB, owned by the cluster", func() {
			sts := &appsv1.StatefulSet{}
			Eventually(func(g Gomega) { sts = getSTS(alpha)(g) }, timeout, interval).Should(Succeed())
			expectOwnedBy(sts, mc)
			Expect(*sts.Spec.Replicas).To(Equal(int32(4)), "3 actives + 1 standby")
			Expect(sts.Spec.ServiceName).To(Equal(alpha + "-nodes"))
			Expect(sts.Spec.Selector.MatchLabels).To(Equal(map[string]string{"app.kubernetes.io/name": "mesh-node", "app.kubernetes.io/instance": alpha}))
			c := sts.Spec.Template.Spec.Containers[0]
			Expect(c.Image).To(Equal(meshv1.DefaultImage))
			Expect(c.Command).To(Equal([]string{"mesh-node"}))
			Expect(c.Args).To(ContainElement("--config=/etc/mesh/node.json"))
			Expect(c.ReadinessProbe.HTTPGet.Path).To(Equal("/readyz"))
			Expect(c.LivenessProbe.HTTPGet.Path).To(Equal("/healthz"))
			Expect(*c.SecurityContext.ReadOnlyRootFilesystem).To(BeTrue())
			Expect(sts.Spec.Template.Annotations).To(HaveKey(resources.ConfigHashAnnotation))
			By("claiming data volumes without owner references")
			Expect(sts.Spec.VolumeClaimTemplates).To(HaveLen(1))
			vct := sts.Spec.VolumeClaimTemplates[0]
			Expect(vct.OwnerReferences).To(BeEmpty())
			Expect(vct.Spec.Resources.Requests.Storage().String()).To(Equal("2Gi"))
			Expect(sts.Spec.PersistentVolumeClaimRetentionPolicy.WhenDeleted).To(Equal(appsv1.RetainPersistentVolumeClaimRetentionPolicyType))
			Expect(sts.Spec.PersistentVolumeClaimRetentionPolicy.WhenScaled).To(Equal(appsv1.RetainPersistentVolumeClaimRetentionPolicyType))
			By("mounting the adapter credentials")
			Expect(sts.Spec.Template.Spec.Volumes).To(ContainElement(HaveField("Secret.SecretName", "redis-creds")))

			headless := &corev1.Service{}
			Expect(k8sClient.Get(ctx, key(alpha+"-nodes"), headless)).To(Succeed())
			expectOwnedBy(headless, mc)
			Expect(headless.Spec.ClusterIP).To(Equal(corev1.ClusterIPNone))
			Expect(headless.Spec.PublishNotReadyAddresses).To(BeTrue())

			clientSvc := &corev1.Service{}
			Expect(k8sClient.Get(ctx, key(alpha), clientSvc)).To(Succeed())
			expectOwnedBy(clientSvc, mc)
			Expect(clientSvc.Spec.ClusterIP).NotTo(Equal(corev1.ClusterIPNone))
			Expect(clientSvc.Spec.Ports).To(ContainElement(HaveField("Port", int32(nodeconfig.DataPort))))

			cm := &corev1.ConfigMap{}
			Expect(k8sClient.Get(ctx, key(alpha+"-config"), cm)).To(Succeed())
			expectOwnedBy(cm, mc)
			cfg, err := nodeconfig.Parse([]byte(cm.Data[nodeconfig.FileName]))
			Expect(err).NotTo(HaveOccurred())
			Expect(cfg.Cluster).To(Equal(alpha))
			Expect(cfg.Shards).To(Equal(8))
			Expect(cfg.AckPolicy).To(Equal("Standby"))
			Expect(cfg.Storage.Mode).To(Equal("Disk"))
			Expect(cfg.Adapter.Type).To(Equal("Redis"))
			Expect(cfg.Adapter.Prefix).To(Equal(alpha))
			Expect(cfg.Daemons).To(HaveLen(1))
			Expect(cfg.Daemons[0].Shards).To(Equal([]int{0, 1}))

			pdb := &policyv1.PodDisruptionBudget{}
			Expect(k8sClient.Get(ctx, key(alpha), pdb)).To(Succeed())
			expectOwnedBy(pdb, mc)
			Expect(pdb.Spec.MaxUnavailable.IntValue()).To(Equal(1))

			By("recording Events for what it created")
			Eventually(func(g Gomega) {
				var reasons []string
				for _, e := range eventsFor(g, alpha) {
					reasons = append(reasons, e.Reason+" "+e.Note)
				}
				g.Expect(reasons).To(ContainElement("Created created StatefulSet " + alpha))
				g.Expect(reasons).To(ContainElement("Created created ConfigMap " + alpha + "-config"))
			}, timeout, interval).Should(Succeed())
		})

		It("records no topology while no pod has an address", func() {
			Eventually(func(g Gomega) {
				got := getCluster(g, alpha)
				g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
				c := meta.FindStatusCondition(got.Status.Conditions, meshv1.ConditionAvailable)
				g.Expect(c).NotTo(BeNil())
				g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
				g.Expect(c.Reason).To(Equal("NotPlaced"))
				g.Expect(got.Status.Epoch).To(BeZero())
				g.Expect(got.Status.Selector).To(Equal("app.kubernetes.io/instance=" + alpha + ",app.kubernetes.io/name=mesh-node"))
			}, timeout, interval).Should(Succeed())
		})

		It("creates the credential Secrets once and mounts the cluster key", func() {
			for _, name := range []string{alpha + "-operator-key", alpha + "-cluster-key"} {
				secret := &corev1.Secret{}
				Eventually(func() error { return k8sClient.Get(ctx, key(name), secret) }, timeout, interval).Should(Succeed())
				expectOwnedBy(secret, mc)
				_, err := identity.KeyPairFromSecretData(secret.Data)
				Expect(err).NotTo(HaveOccurred(), name)
			}
			Eventually(func(g Gomega) {
				g.Expect(getSTS(alpha)(g).Spec.Template.Spec.Volumes).To(ContainElement(HaveField("Secret.SecretName", alpha+"-cluster-key")))
			}, timeout, interval).Should(Succeed())
			cm := &corev1.ConfigMap{}
			Expect(k8sClient.Get(ctx, key(alpha+"-config"), cm)).To(Succeed())
			opSecret := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, key(alpha+"-operator-key"), opSecret)).To(Succeed())
			Expect(cm.Data[resources.OperatorPublicKeyFile]).To(Equal(string(opSecret.Data[identity.SecretPublicKey])))
		})
	})

	Describe("spec changes", func() {
		var (
			mc   *meshv1.MeshCluster
			name string
			seq  int
		)
		BeforeEach(func() {
			// A fresh name per spec: the garbage collector may still be
			// deleting the previous spec's children.
			seq++
			name = fmt.Sprintf("beta-%d", seq)
			mc = newCluster(name)
			Expect(k8sClient.Create(ctx, mc)).To(Succeed())
			DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, mc))).To(Succeed()) })
			Eventually(getSTS(name), timeout, interval).Should(Not(BeNil()))
		})

		update := func(mutate func(*meshv1.MeshCluster)) {
			Eventually(func(g Gomega) {
				got := getCluster(g, name)
				mutate(got)
				g.Expect(k8sClient.Update(ctx, got)).To(Succeed())
			}, timeout, interval).Should(Succeed())
		}

		It("propagates a new image to the pod template", func() {
			update(func(m *meshv1.MeshCluster) { m.Spec.Image = "example.org/mesh-node:v2" })
			Eventually(func(g Gomega) string {
				return getSTS(name)(g).Spec.Template.Spec.Containers[0].Image
			}, timeout, interval).Should(Equal("example.org/mesh-node:v2"))
		})

		It("propagates new resources to the container", func() {
			update(func(m *meshv1.MeshCluster) {
				m.Spec.Resources = corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
				}
			})
			Eventually(func(g Gomega) {
				r := getSTS(name)(g).Spec.Template.Spec.Containers[0].Resources
				g.Expect(r.Requests.Cpu().String()).To(Equal("250m"))
				g.Expect(r.Requests.Memory().String()).To(Equal("256Mi"))
				g.Expect(r.Limits.Memory().String()).To(Equal("512Mi"))
			}, timeout, interval).Should(Succeed())
		})

		It("rolls the pods when the node configuration changes", func() {
			before := getSTS(name)(Default).Spec.Template.Annotations[resources.ConfigHashAnnotation]
			update(func(m *meshv1.MeshCluster) { m.Spec.Retention.MaxEvents = ptrTo[int64](1000) })
			Eventually(func(g Gomega) string {
				return getSTS(name)(g).Spec.Template.Annotations[resources.ConfigHashAnnotation]
			}, timeout, interval).ShouldNot(Equal(before))
		})

		It("allows no voluntary eviction once the standbys are removed (every pod is then an owner)", func() {
			pdb := &policyv1.PodDisruptionBudget{}
			Eventually(func(g Gomega) int {
				g.Expect(k8sClient.Get(ctx, key(name), pdb)).To(Succeed())
				return pdb.Spec.MaxUnavailable.IntValue()
			}, timeout, interval).Should(Equal(1))
			update(func(m *meshv1.MeshCluster) { m.Spec.Standby.Replicas = ptrTo[int32](0) })
			Eventually(func(g Gomega) int {
				g.Expect(k8sClient.Get(ctx, key(name), pdb)).To(Succeed())
				return pdb.Spec.MaxUnavailable.IntValue()
			}, timeout, interval).Should(Equal(0))
		})

		It("grows the StatefulSet when nodes grow", func() {
			update(func(m *meshv1.MeshCluster) { m.Spec.Nodes = 4 })
			Eventually(func(g Gomega) int32 { return *getSTS(name)(g).Spec.Replicas }, timeout, interval).Should(Equal(int32(5)))
		})

		It("shrinks at once while no shard is placed (nothing to move)", func() {
			// Safe scale-down with shards to move is pinned in
			// orchestration_test.go with real nodes.
			update(func(m *meshv1.MeshCluster) { m.Spec.Nodes = 2 })
			Eventually(func(g Gomega) int32 { return *getSTS(name)(g).Spec.Replicas }, timeout, interval).Should(Equal(int32(3)))
			Expect(meta.IsStatusConditionTrue(getCluster(Default, name).Status.Conditions, meshv1.ConditionScaleDownBlocked)).To(BeFalse())
		})

		It("changes nothing while paused, but keeps status fresh", func() {
			update(func(m *meshv1.MeshCluster) { m.Spec.Paused = true; m.Spec.Image = "example.org/mesh-node:paused" })
			Eventually(func(g Gomega) meshv1.Phase { return getCluster(g, name).Status.Phase }, timeout, interval).Should(Equal(meshv1.PhasePaused))
			Consistently(func(g Gomega) string {
				return getSTS(name)(g).Spec.Template.Spec.Containers[0].Image
			}, 2*time.Second, interval).Should(Equal(meshv1.DefaultImage))
			markPodsReady(name, 4)
			Eventually(func(g Gomega) int32 { return getCluster(g, name).Status.ReadyNodes }, timeout, interval).Should(Equal(int32(4)))
		})
	})

	It("deletes its children through the garbage collector when the cluster is deleted", func() {
		mc := newCluster("gamma")
		Expect(k8sClient.Create(ctx, mc)).To(Succeed())
		Eventually(getSTS("gamma"), timeout, interval).Should(Not(BeNil()))
		Eventually(func() error { return k8sClient.Get(ctx, key("gamma"), &policyv1.PodDisruptionBudget{}) }, timeout, interval).Should(Succeed())

		Expect(k8sClient.Delete(ctx, mc)).To(Succeed())
		children := []client.Object{&appsv1.StatefulSet{}, &corev1.Service{}, &policyv1.PodDisruptionBudget{}}
		for _, obj := range children {
			Eventually(func() bool {
				return apierrors.IsNotFound(k8sClient.Get(ctx, key("gamma"), obj))
			}, 90*time.Second, 250*time.Millisecond).Should(BeTrue(), "%T gamma should be garbage collected", obj)
		}
		Eventually(func() bool { return apierrors.IsNotFound(k8sClient.Get(ctx, key("gamma-nodes"), &corev1.Service{})) }, timeout, interval).Should(BeTrue())
		Eventually(func() bool { return apierrors.IsNotFound(k8sClient.Get(ctx, key("gamma-config"), &corev1.ConfigMap{})) }, timeout, interval).Should(BeTrue())
	})

	It("makes no API write when reconciling an unchanged cluster", func() {
		mc := newCluster("steady")
		mc.Spec.Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("0.5")}
		Expect(k8sClient.Create(ctx, mc)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, mc))).To(Succeed()) })
		markPodsReady("steady", 4)
		Eventually(func(g Gomega) {
			got := getCluster(g, "steady")
			g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
			g.Expect(got.Status.ReadyNodes).To(Equal(int32(4)))
		}, timeout, interval).Should(Succeed())

		objects := map[string]client.Object{
			"MeshCluster":         &meshv1.MeshCluster{},
			"StatefulSet":         &appsv1.StatefulSet{},
			"client Service":      &corev1.Service{},
			"PodDisruptionBudget": &policyv1.PodDisruptionBudget{},
		}
		versions := func() map[string]string {
			out := map[string]string{}
			for name, obj := range objects {
				Expect(k8sClient.Get(ctx, key("steady"), obj)).To(Succeed())
				out[name] = obj.GetResourceVersion()
			}
			for _, n := range []string{"steady-nodes", "steady-config"} {
				var obj client.Object = &corev1.Service{}
				if n == "steady-config" {
					obj = &corev1.ConfigMap{}
				}
				Expect(k8sClient.Get(ctx, key(n), obj)).To(Succeed())
				out[n] = obj.GetResourceVersion()
			}
			return out
		}
		before := versions()

		var (
			writes  atomic.Int32
			mu      sync.Mutex
			written []string
		)
		count := func(verb string, obj client.Object) {
			writes.Add(1)
			mu.Lock()
			defer mu.Unlock()
			written = append(written, fmt.Sprintf("%s %T %s", verb, obj, obj.GetName()))
		}
		counting := interceptor.NewClient(k8sClient, interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				count("create", obj)
				return c.Create(ctx, obj, opts...)
			},
			Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
				count("update", obj)
				return c.Update(ctx, obj, opts...)
			},
			Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
				count("patch", obj)
				return c.Patch(ctx, obj, p, opts...)
			},
			Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
				count("delete", obj)
				return c.Delete(ctx, obj, opts...)
			},
			SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
				count("update "+sub, obj)
				return c.SubResource(sub).Update(ctx, obj, opts...)
			},
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
				count("patch "+sub, obj)
				return c.SubResource(sub).Patch(ctx, obj, p, opts...)
			},
		})
		recorder := events.NewFakeRecorder(10)
		r := &controllers.MeshClusterReconciler{Client: counting, Scheme: scheme, Recorder: recorder}
		for range 2 {
			_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: key("steady")})
			Expect(err).NotTo(HaveOccurred())
		}
		Expect(writes.Load()).To(BeZero(), "a reconcile of an unchanged cluster must not write; it wrote %v", written)
		Expect(recorder.Events).To(BeEmpty(), "a reconcile of an unchanged cluster must not emit Events")
		Expect(versions()).To(Equal(before))
	})
})

func ptrTo[T any](v T) *T { return &v }
