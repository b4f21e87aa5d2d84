package controllers_test

import (
	"context"
	"crypto/ed25519"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	meshclient "github.com/purplerain/mesh-operator/client"
	"github.com/purplerain/mesh-operator/controllers"
	"github.com/purplerain/mesh-operator/engine/identity"
)

var _ = Describe("Data grant renewal", func() {
	ctx := context.Background()

	It("re-signs the data grant in place before it expires, and publishes the nodes' key", func() {
		const name = "grant"
		// A grant of 15s is re-signed once less than 3s of it is left.
		DeferCleanup(controllers.SetDataGrantTTL(15 * time.Second))
		mc := newCluster(name)
		mc.Spec.Nodes = 2
		mc.Spec.Standby.Replicas = nil
		mc.Spec.Shards.Count = 2
		Expect(k8sClient.Create(ctx, mc)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, mc))).To(Succeed()) })
		kubelet := startKubelet(name)
		waitAvailable(name)

		first := dataCredentials(name)
		operator := secretKey(Default, name+"-operator-key")
		cluster := secretKey(Default, name+"-cluster-key")
		By("the data Secret names the cluster key as the nodes' server key")
		Expect(first.ServerKeys).To(HaveLen(1))
		Expect(first.ServerKeys[0].Equal(cluster.PublicKey())).To(BeTrue())

		By("a grant near its end is re-signed for the same data key at the next reconcile")
		var renewed *identity.DataCredentials
		Eventually(func(g Gomega) {
			// Reconciles come from changes (and the sync period); make one.
			updateCluster(name, func(m *meshv1.MeshCluster) {
				if m.Annotations == nil {
					m.Annotations = map[string]string{}
				}
				m.Annotations["test/touch"] = time.Now().Format(time.RFC3339Nano)
			})
			renewed = dataCredentials(name)
			g.Expect(renewed.Grant.NotAfter().After(first.Grant.NotAfter())).To(BeTrue(), "grant not renewed")
		}, 60*time.Second, 500*time.Millisecond).Should(Succeed())
		Expect(renewed.Key.PublicKey().Equal(first.Key.PublicKey())).To(BeTrue(), "the data key was replaced")
		Expect(renewed.Check(identity.NewVerifier([]ed25519.PublicKey{operator.PublicKey()}), time.Now())).To(Succeed())
		Eventually(func(g Gomega) []string { return eventReasons(g, name, corev1.EventTypeNormal) }, timeout, interval).Should(ContainElement("DataGrantRenewed"))

		By("once the first grant has expired, nodes refuse it and accept the renewed one")
		time.Sleep(time.Until(first.Grant.NotAfter().Add(identity.DefaultClockSkew + 100*time.Millisecond)))
		latest := dataCredentials(name) // renewed again meanwhile, perhaps
		sdk, err := meshclient.New(ctx, meshclient.Options{Addresses: kubelet.dataAddrs(), RetryMax: 200 * time.Millisecond, Credentials: latest})
		Expect(err).NotTo(HaveOccurred())
		_, err = sdk.Ingest(ctx, meshclient.Event{Payload: []byte("renewed")})
		Expect(err).NotTo(HaveOccurred())
		stale, err := meshclient.New(ctx, meshclient.Options{Addresses: kubelet.dataAddrs(), RetryMax: 200 * time.Millisecond, Credentials: first})
		if err == nil {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, err = stale.Ingest(cctx, meshclient.Event{Payload: []byte("expired")})
			cancel()
		}
		Expect(err).To(HaveOccurred(), "an expired data grant is still accepted")
	})
})
