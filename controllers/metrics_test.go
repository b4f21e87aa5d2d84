package controllers_test

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
)

// operatorMetric reads a metric of one cluster from controller-runtime's
// registry (the one the manager serves; prometheus/testutil is not used as
// its diff dependency is not in go.mod): a counter's or gauge's value, or
// a histogram's sample count and sum.
func operatorMetric(g Gomega, name, cluster string) (value float64, count uint64) {
	families, err := ctrlmetrics.Registry.Gather()
	g.Expect(err).NotTo(HaveOccurred())
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.Metric {
			if !hasLabel(m, "cluster", cluster) || !hasLabel(m, "namespace", "default") {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), 0
			case m.Gauge != nil:
				return m.Gauge.GetValue(), 0
			case m.Histogram != nil:
				return m.Histogram.GetSampleSum(), m.Histogram.GetSampleCount()
			}
		}
	}
	return 0, 0
}

// reconciles reads mesh_operator_reconciles_total for one result.
func reconciles(g Gomega, result string) float64 {
	families, err := ctrlmetrics.Registry.Gather()
	g.Expect(err).NotTo(HaveOccurred())
	for _, f := range families {
		if f.GetName() == "mesh_operator_reconciles_total" {
			for _, m := range f.Metric {
				if hasLabel(m, "result", result) {
					return m.Counter.GetValue()
				}
			}
		}
	}
	return 0
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.Label {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

var _ = Describe("Operator metrics", func() {
	ctx := context.Background()

	It("count the moves of a scale-up and a failover with its duration, and track the epoch", func() {
		const name = "metrics"
		mc := newCluster(name)
		mc.Spec.Nodes = 2
		mc.Spec.Shards.Count = 4
		mc.Spec.Standby.FailoverAfter = metav1.Duration{Duration: time.Second}
		Expect(k8sClient.Create(ctx, mc)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, mc))).To(Succeed()) })
		kubelet := startKubelet(name)
		waitAvailable(name)
		Expect(reconciles(Default, "success")).To(BeNumerically(">", 0))
		Eventually(func(g Gomega) {
			epoch, _ := operatorMetric(g, "mesh_operator_epoch", name)
			g.Expect(epoch).To(BeEquivalentTo(getCluster(g, name).Status.Epoch))
		}, timeout, interval).Should(Succeed())
		started, _ := operatorMetric(Default, "mesh_operator_migrations_started_total", name)
		Expect(started).To(BeZero(), "a new cluster moves nothing")

		By("scaling up 2→3 actives: the new one takes shards by moves")
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Nodes = 3 })
		Eventually(func(g Gomega) {
			got := getCluster(g, name)
			counts := ownedCounts(got)
			g.Expect(counts).To(HaveLen(3))
			for _, n := range counts {
				g.Expect(n).To(BeNumerically(">=", 1), "%v", counts)
			}
			g.Expect(meta.IsStatusConditionFalse(got.Status.Conditions, meshv1.ConditionProgressing)).To(BeTrue())
		}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
		var moved []string
		Eventually(func(g Gomega) {
			moved = nil
			for _, e := range eventsFor(g, name) {
				if e.Reason == "ShardMoved" {
					moved = append(moved, e.Note)
				}
			}
			g.Expect(moved).NotTo(BeEmpty())
			started, _ := operatorMetric(g, "mesh_operator_migrations_started_total", name)
			completed, _ := operatorMetric(g, "mesh_operator_migrations_completed_total", name)
			failed, _ := operatorMetric(g, "mesh_operator_migrations_failed_total", name)
			g.Expect(completed).To(BeEquivalentTo(len(moved)), "one completion per ShardMoved Event: %v", moved)
			g.Expect(started).To(Equal(completed + failed))
		}, timeout, interval).Should(Succeed())

		By("killing an active owner: one failover, timed from the first not-ready pass")
		victim := getCluster(Default, name).Status.Shards[0].Owner
		kubelet.kill(victim)
		Eventually(func(g Gomega) []string { return eventReasons(g, name, corev1.EventTypeNormal) }, 30*time.Second, interval).Should(ContainElement("Promoted"))
		Eventually(func(g Gomega) {
			n, _ := operatorMetric(g, "mesh_operator_failovers_total", name)
			g.Expect(n).To(BeEquivalentTo(1))
			sum, count := operatorMetric(g, "mesh_operator_failover_duration_seconds", name)
			g.Expect(count).To(BeEquivalentTo(1))
			// Never less than failoverAfter: the member was not ready
			// that long before anything was promoted.
			g.Expect(sum).To(BeNumerically(">=", 1.0))
			epoch, _ := operatorMetric(g, "mesh_operator_epoch", name)
			g.Expect(epoch).To(BeEquivalentTo(getCluster(g, name).Status.Epoch))
		}, timeout, interval).Should(Succeed())
		sum, _ := operatorMetric(Default, "mesh_operator_failover_duration_seconds", name)
		fmt.Fprintf(GinkgoWriter, "time to failover recorded: %.2fs (failoverAfter 1s)\n", sum)

		By("deleting the cluster drops its series")
		Expect(k8sClient.Delete(ctx, mc)).To(Succeed())
		Eventually(func(g Gomega) float64 {
			n, _ := operatorMetric(g, "mesh_operator_failovers_total", name)
			return n
		}, 60*time.Second, interval).Should(BeZero())
	})
})
