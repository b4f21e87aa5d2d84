package controllers_test

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	meshclient "github.com/purplerain/mesh-operator/client"
)

var _ = Describe("A cluster with real nodes", func() {
	ctx := context.Background()

	It("places shards, renews leases, becomes Available and acknowledges only what it stored", func() {
		mc := newCluster("delta")
		mc.Spec.Nodes = 2
		mc.Spec.Shards.Count = 4
		mc.Spec.Standby.AckPolicy = meshv1.AckStandby
		Expect(k8sClient.Create(ctx, mc)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, mc))).To(Succeed()) })
		kubelet := startKubelet("delta")

		By("placing the shards over the actives, the standby following all")
		Eventually(func(g Gomega) {
			got := getCluster(g, "delta")
			g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, meshv1.ConditionAvailable)).To(BeTrue(), "%v", got.Status.Conditions)
			g.Expect(got.Status.Epoch).To(BeNumerically(">=", 1))
			g.Expect(got.Status.Members).To(HaveLen(3))
			g.Expect(got.Status.ShardCount).To(Equal(int32(4)))
			g.Expect(got.Status.Nodes).To(Equal(int32(2)))
			g.Expect(got.Status.ReadyNodes).To(Equal(int32(3)))
			for _, s := range got.Status.Shards {
				g.Expect(s.Owner).To(BeElementOf("delta-0", "delta-1"))
				g.Expect(s.Followers).To(Equal([]string{"delta-2"}))
			}
			g.Expect(got.Status.Phase).To(Equal(meshv1.PhaseRunning))
		}, 60*time.Second, 200*time.Millisecond).Should(Succeed())

		By("staying ready past several lease durations (the operator renews)")
		Consistently(func(g Gomega) bool {
			return meta.IsStatusConditionTrue(getCluster(g, "delta").Status.Conditions, meshv1.ConditionAvailable)
		}, 3*mc.Spec.Standby.LeaseDuration.Duration+time.Second, 250*time.Millisecond).Should(BeTrue())

		By("ingesting keyed and keyless events through the SDK under ackPolicy Standby")
		sdk, err := meshclient.New(ctx, meshclient.Options{Addresses: kubelet.dataAddrs(), Credentials: dataCredentials("delta")})
		Expect(err).NotTo(HaveOccurred())
		var events []meshclient.Event
		for i := range 300 {
			e := meshclient.Event{Payload: []byte(fmt.Sprintf("event-%03d", i))}
			if i%3 != 0 {
				e.Key = []byte(fmt.Sprintf("key-%d", i%17))
			}
			events = append(events, e)
		}
		ingestCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		acks, err := sdk.Ingest(ingestCtx, events...)
		Expect(err).NotTo(HaveOccurred())
		Expect(acks).To(HaveLen(300))

		By("reading every acknowledged event back exactly once, in per-shard seq order")
		poller, err := sdk.NewPoller("")
		Expect(err).NotTo(HaveOccurred())
		seen := map[string]int{}
		lastSeq := map[uint16]int64{}
		Eventually(func(g Gomega) int {
			page, err := poller.Poll(ctx, 100)
			g.Expect(err).NotTo(HaveOccurred())
			for _, e := range page.Events {
				seen[string(e.Payload)]++
				prev, ok := lastSeq[e.Shard]
				g.Expect(!ok || int64(e.Seq) > prev).To(BeTrue(), "shard %d seq %d after %d", e.Shard, e.Seq, prev)
				lastSeq[e.Shard] = int64(e.Seq)
			}
			return len(seen)
		}, 20*time.Second, 50*time.Millisecond).Should(Equal(300))
		for p, n := range seen {
			Expect(n).To(Equal(1), "%s read %d times", p, n)
		}
		Expect(len(lastSeq)).To(BeNumerically(">", 1), "events should spread over several shards")
	})
})
