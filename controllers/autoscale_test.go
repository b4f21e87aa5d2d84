package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	meshclient "github.com/purplerain/mesh-operator/client"
)

// autoscaleWatch follows a cluster's status while the spec runs and keeps
// what the assertions need: every distinct status.autoscale.lastChange,
// the largest shard count seen, when each added shard's last idle stretch
// began and the lastChange of its drain, and any base shard ever recorded
// draining.
type autoscaleWatch struct {
	mu          sync.Mutex
	changes     []time.Time
	maxShards   int32
	idleSince   map[int32]time.Time
	drainedAt   map[int32]time.Time
	baseDrained []int32
	stop        chan struct{}
	done        chan struct{}
}

func watchAutoscale(name string, base int32) *autoscaleWatch {
	w := &autoscaleWatch{idleSince: map[int32]time.Time{}, drainedAt: map[int32]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer GinkgoRecover()
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			mc := &meshv1.MeshCluster{}
			if err := k8sClient.Get(context.Background(), key(name), mc); err != nil {
				continue
			}
			w.mu.Lock()
			w.maxShards = max(w.maxShards, int32(len(mc.Status.Shards)))
			if a := mc.Status.Autoscale; a != nil && a.LastChange != nil {
				if n := len(w.changes); n == 0 || !w.changes[n-1].Equal(a.LastChange.Time) {
					w.changes = append(w.changes, a.LastChange.Time)
				}
			}
			for _, s := range mc.Status.Shards {
				if s.ID < base && s.Draining {
					w.baseDrained = append(w.baseDrained, s.ID)
				}
				if s.IdleSince != nil && !s.Draining {
					// The idle stretch that ends in the drain is the last
					// one seen (a new shard may look idle before its first
					// report).
					w.idleSince[s.ID] = s.IdleSince.Time
				}
				if _, ok := w.drainedAt[s.ID]; s.Draining && !ok && mc.Status.Autoscale != nil && mc.Status.Autoscale.LastChange != nil {
					w.drainedAt[s.ID] = mc.Status.Autoscale.LastChange.Time
				}
			}
			w.mu.Unlock()
		}
	}()
	DeferCleanup(w.close)
	return w
}

func (w *autoscaleWatch) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// expectEachAckReadOnce stops the load, reads the whole cluster from the
// beginning and checks that every acknowledged event is there exactly
// once, that keyed events are only on base shards, and returns how many
// acknowledged events each shard held.
func expectEachAckReadOnce(sdk *meshclient.Client, l *ingestLoad, base uint16) map[uint16]int {
	l.stop()
	ctx := context.Background()
	Expect(sdk.Refresh(ctx)).To(Succeed())
	poller, err := sdk.NewPoller("")
	Expect(err).NotTo(HaveOccurred())
	times := map[string]int{}
	perShard := map[uint16]int{}
	missing := func() int {
		n := 0
		for p := range l.acked {
			if times[p] == 0 {
				n++
			}
		}
		return n
	}
	Eventually(func(g Gomega) int {
		page, err := poller.Poll(ctx, 1000)
		g.Expect(err).NotTo(HaveOccurred())
		for _, e := range page.Events {
			p := string(e.Payload)
			times[p]++
			if !l.acked[p] {
				continue
			}
			perShard[e.Shard]++
			if _, k, _ := strings.Cut(p, "/"); k != "" {
				g.Expect(e.Shard).To(BeNumerically("<", base), "keyed event %s stored on added shard %d", p, e.Shard)
			}
		}
		return missing()
	}, 30*time.Second, 20*time.Millisecond).Should(BeZero(), "acknowledged events not read back")
	for p := range l.acked {
		Expect(times[p]).To(Equal(1), "acknowledged event %s read %d times", p, times[p])
	}
	fmt.Fprintf(GinkgoWriter, "read back each of %d acknowledged events once, per shard %v (%d ingest calls failed)\n", len(l.acked), perShard, l.failed)
	return perShard
}

var _ = Describe("Shard autoscaling with real nodes", func() {
	ctx := context.Background()

	It("adds shards under keyless load up to maxShards one cooldown apart, drains the added ones after scaleDownDelay when the load stops (across an operator restart), and removes them once retention empties them, never a base shard, losing nothing acknowledged", func() {
		const (
			name           = "autoscale"
			base           = 2
			maxShards      = 4
			cooldown       = 3 * time.Second
			scaleDownDelay = 4 * time.Second
		)
		mc := newCluster(name)
		mc.Spec.Nodes = 2
		mc.Spec.Shards.Count = base
		// Acknowledged only once the standby has it: added shards must be
		// replicated to their followers like base ones.
		mc.Spec.Standby.AckPolicy = meshv1.AckStandby
		// The event rate is the load signal: real SDK ingest (tens of
		// events per second per shard) is far above 5/s, an idle shard far
		// below 10% of it. Latency and fill thresholds are out of reach,
		// so the spec does not depend on how fast this machine is.
		mc.Spec.Shards.Autoscale = &meshv1.AutoscaleSpec{
			Enabled: true, MaxShards: maxShards, EventRateThreshold: 5,
			FillRatioThresholdPercent: 100, UnderutilizedThresholdPercent: ptrTo[int32](10),
			PushLatencyThreshold: metav1.Duration{Duration: time.Hour}, FlushLatencyThreshold: metav1.Duration{Duration: time.Hour},
			MetricsWindow: metav1.Duration{Duration: 2 * time.Second}, Cooldown: metav1.Duration{Duration: cooldown},
			ScaleDownDelay: metav1.Duration{Duration: scaleDownDelay},
		}
		// Long enough to read everything back while the added shards
		// drain, short enough that they empty within the spec.
		mc.Spec.Retention.MaxAge = &metav1.Duration{Duration: 40 * time.Second}
		Expect(k8sClient.Create(ctx, mc)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, mc))).To(Succeed()) })
		kubelet := startKubelet(name)
		waitAvailable(name)
		sdk, err := meshclient.New(ctx, meshclient.Options{Addresses: kubelet.dataAddrs(), RetryMax: 200 * time.Millisecond, Credentials: dataCredentials(name)})
		Expect(err).NotTo(HaveOccurred())
		w := watchAutoscale(name, base)

		By("ingesting keyed and keyless events: the shard count goes up to maxShards")
		load := startIngest(sdk)
		Eventually(func(g Gomega) {
			got := getCluster(g, name)
			g.Expect(got.Status.ShardCount).To(Equal(int32(maxShards)))
			g.Expect(got.Status.Autoscale).NotTo(BeNil())
			g.Expect(got.Status.Autoscale.NextShardID).To(Equal(int32(maxShards)))
			for _, s := range got.Status.Shards {
				g.Expect(s.Fenced).To(BeFalse())
			}
		}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
		Eventually(func(g Gomega) []string { return eventReasons(g, name, corev1.EventTypeNormal) }, timeout, interval).Should(ContainElement("ShardAdded"))
		got := getCluster(Default, name)
		Expect(got.Status.Autoscale.Reason).To(ContainSubstring("adding shard 3"))
		Expect(got.Status.Autoscale.Reason).To(ContainSubstring("shards overloaded"))
		for _, s := range got.Status.Shards {
			Expect(s.Followers).To(ContainElement(name+"-2"), "shard %d is followed by the standby", s.ID)
		}

		By("staying at maxShards while the load goes on, and ingest keeps being acknowledged")
		n := load.count()
		Consistently(func(g Gomega) int32 { return getCluster(g, name).Status.ShardCount }, cooldown+2*time.Second, 200*time.Millisecond).Should(Equal(int32(maxShards)))
		Expect(load.count()).To(BeNumerically(">", n))
		Expect(getCluster(Default, name).Status.Autoscale.Overloaded).To(BeNumerically(">", 0))

		By("restarting the operator: the policy's state is in status, the new one goes on from it")
		stopManager()
		startManager()

		By("stopping the load: the added shards drain after scaleDownDelay, the base shards stay")
		load.stop()
		Eventually(func(g Gomega) {
			got := getCluster(g, name)
			g.Expect(got.Status.ShardCount).To(Equal(int32(maxShards)), "draining shards stay until retention empties them")
			for _, s := range got.Status.Shards {
				g.Expect(s.Draining).To(Equal(s.ID >= base), "shard %d", s.ID)
			}
		}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
		Eventually(func(g Gomega) []string { return eventReasons(g, name, corev1.EventTypeNormal) }, timeout, interval).Should(ContainElement("ShardDraining"))

		By("reading back every acknowledged event exactly once while the added shards drain")
		perShard := expectEachAckReadOnce(sdk, load, base)
		for id := uint16(base); id < maxShards; id++ {
			Expect(perShard[id]).To(BeNumerically(">", 0), "added shard %d was served and is still read while draining", id)
		}
		ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
		acks, err := sdk.Ingest(ictx, meshclient.Event{Payload: []byte("after-drain")})
		cancel()
		Expect(err).NotTo(HaveOccurred())
		Expect(acks[0].Shard).To(BeNumerically("<", base), "a keyless event after the drain went to draining shard %d", acks[0].Shard)

		By("removing the drained shards once retention emptied them")
		Eventually(func(g Gomega) {
			got := getCluster(g, name)
			g.Expect(got.Status.ShardCount).To(Equal(int32(base)))
			g.Expect(got.Status.Shards).To(HaveLen(base))
		}, 90*time.Second, 200*time.Millisecond).Should(Succeed())
		Eventually(func(g Gomega) map[string]int {
			count := map[string]int{}
			for _, r := range eventReasons(g, name, corev1.EventTypeNormal) {
				count[r]++
			}
			return map[string]int{"ShardAdded": count["ShardAdded"], "ShardDraining": count["ShardDraining"], "ShardRemoved": count["ShardRemoved"]}
		}, timeout, interval).Should(Equal(map[string]int{"ShardAdded": maxShards - base, "ShardDraining": maxShards - base, "ShardRemoved": maxShards - base}))

		By("having honoured cooldown, maxShards and scaleDownDelay, and never drained a base shard")
		w.close()
		w.mu.Lock()
		defer w.mu.Unlock()
		Expect(w.baseDrained).To(BeEmpty())
		Expect(w.maxShards).To(Equal(int32(maxShards)))
		// Adds and drains each record lastChange: consecutive ones are at
		// least a cooldown apart.
		Expect(len(w.changes)).To(BeNumerically(">=", 2*(maxShards-base)))
		for i := 1; i < len(w.changes); i++ {
			Expect(w.changes[i].Sub(w.changes[i-1])).To(BeNumerically(">=", cooldown), "scaling actions at %v", w.changes)
		}
		for id := int32(base); id < maxShards; id++ {
			idle, ok := w.idleSince[id]
			Expect(ok).To(BeTrue(), "shard %d was never recorded idle before draining", id)
			Expect(w.drainedAt[id].Sub(idle)).To(BeNumerically(">=", scaleDownDelay), "shard %d idle since %s, drained at %s", id, idle, w.drainedAt[id])
		}
		fmt.Fprintf(GinkgoWriter, "autoscaling actions at %v; idle %v; drained %v\n", w.changes, w.idleSince, w.drainedAt)
	})
})
