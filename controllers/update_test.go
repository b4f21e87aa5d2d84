package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	meshclient "github.com/purplerain/mesh-operator/client"
	"github.com/purplerain/mesh-operator/controllers/resources"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/topology"
)

// rollWatch follows a cluster's pods during a rolling update: the order
// in which pods were replaced, every UID each pod had, the most pods
// missing or not ready at once, and which pods went while their member
// still owned shards in the recorded topology.
type rollWatch struct {
	mu sync.Mutex
	// replaced lists pod names in the order a new UID appeared.
	replaced []string
	uids     map[string][]types.UID
	// maxDown is the most pods absent, terminating or not ready at once.
	maxDown int
	// ownerGone names pods deleted while their member owned shards: in
	// the status read after the deletion arrived (watchDeletions; nothing
	// moves shards off a pod being restarted, so it owned them when it
	// was deleted).
	ownerGone []string

	stop context.CancelFunc
	done chan struct{}
}

func watchRoll(cluster string, pods int) *rollWatch {
	w := &rollWatch{uids: map[string][]types.UID{}, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	w.stop = cancel
	var wg sync.WaitGroup
	wg.Go(func() {
		defer GinkgoRecover()
		for ctx.Err() == nil {
			list := &corev1.PodList{}
			if k8sClient.List(ctx, list, client.InNamespace("default")) == nil {
				w.mu.Lock()
				down := pods
				for _, p := range list.Items {
					if !strings.HasPrefix(p.Name, cluster+"-") {
						continue
					}
					if uids := w.uids[p.Name]; !slices.Contains(uids, p.UID) {
						if len(uids) > 0 {
							w.replaced = append(w.replaced, p.Name)
						}
						w.uids[p.Name] = append(uids, p.UID)
					}
					if p.DeletionTimestamp != nil {
						continue
					}
					if slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
						return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
					}) {
						down--
					}
				}
				w.maxDown = max(w.maxDown, down)
				w.mu.Unlock()
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	wg.Go(func() {
		defer GinkgoRecover()
		w.watchDeletions(ctx, cluster)
	})
	go func() {
		wg.Wait()
		close(w.done)
	}()
	DeferCleanup(w.halt)
	return w
}

// watchDeletions judges every deletion of one of cluster's pods that the
// API server reports (a watch, not a poll: a pod deleted with its node
// stopped at once is gone within a kubelet round) against the status
// read after the deletion arrived. The operator records an active's last
// handoff and deletes its pod a pass later (tens of milliseconds), so a
// status read before the deletion was seen can predate that handoff and
// show the member still owning the shard it just handed off; a status
// read after it is at least the one the operator deleted the pod under.
func (w *rollWatch) watchDeletions(ctx context.Context, cluster string) {
	rv := "" // the last event's resourceVersion: a rewatch resumes there
	for ctx.Err() == nil {
		opts := &client.ListOptions{Namespace: "default", Raw: &metav1.ListOptions{ResourceVersion: rv}}
		pw, err := k8sClient.Watch(ctx, &corev1.PodList{}, opts)
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		for ev := range pw.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				if ev.Type == watch.Error {
					rv = "" // expired: the rewatch starts from now
					break
				}
				continue
			}
			rv = p.ResourceVersion
			if !strings.HasPrefix(p.Name, cluster+"-") || (p.DeletionTimestamp == nil && ev.Type != watch.Deleted) {
				continue
			}
			mc := &meshv1.MeshCluster{}
			for k8sClient.Get(ctx, key(cluster), mc) != nil && ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
			}
			w.mu.Lock()
			if ownedAt(mc, p.Name, p.Status.PodIP) > 0 && !slices.Contains(w.ownerGone, p.Name) {
				w.ownerGone = append(w.ownerGone, p.Name)
			}
			w.mu.Unlock()
		}
		pw.Stop()
	}
}

// ownedAt is how many shards name's member owns in mc's recorded
// topology while that member is at ip (the recorded topology still
// describes the pod at ip, not one that replaced it).
func ownedAt(mc *meshv1.MeshCluster, name, ip string) int {
	if !slices.ContainsFunc(mc.Status.Members, func(m meshv1.MemberStatus) bool { return m.Name == name && m.Address == ip }) {
		return 0
	}
	return ownedCounts(mc)[name]
}

func (w *rollWatch) halt() {
	w.stop()
	<-w.done
}

// replacedSince returns the pods replaced after the first n replacements.
func (w *rollWatch) replacedSince(n int) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.replaced[min(n, len(w.replaced)):])
}

func countReasons(reasons []string, reason string) int {
	n := 0
	for _, r := range reasons {
		if r == reason {
			n++
		}
	}
	return n
}

// expectRolled waits until every member runs the StatefulSet's update
// revision, the roll's record is gone, RollingUpdateFinished was told
// finished times, and the cluster is balanced and stable again.
func expectRolled(name string, finished int, within time.Duration) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		got := getCluster(g, name)
		sts := getSTS(name)(g)
		g.Expect(sts.Status.ObservedGeneration).To(Equal(sts.Generation))
		rev := sts.Status.UpdateRevision
		g.Expect(got.Status.Update).To(BeNil())
		g.Expect(got.Status.Members).To(HaveLen(4))
		for _, m := range got.Status.Members {
			g.Expect(m.Revision).To(Equal(rev), "member %s", m.Name)
			g.Expect(m.Ready).To(BeTrue(), "member %s", m.Name)
		}
		counts := ownedCounts(got)
		g.Expect(counts).To(HaveLen(3), "%v", counts)
		for _, n := range counts {
			g.Expect(n).To(BeNumerically(">=", 2), "balanced: %v", counts)
		}
		g.Expect(meta.IsStatusConditionFalse(got.Status.Conditions, meshv1.ConditionProgressing)).To(BeTrue(), "%v", got.Status.Conditions)
		g.Expect(countReasons(eventReasons(g, name, corev1.EventTypeNormal), "RollingUpdateFinished")).To(Equal(finished))
	}, within, 200*time.Millisecond).Should(Succeed())
}

var _ = Describe("Operator-driven rolling update with real nodes", func() {
	ctx := context.Background()

	create := func(name string) (*testKubelet, *meshclient.Client) {
		GinkgoHelper()
		mc := newCluster(name)
		mc.Spec.Standby.AckPolicy = meshv1.AckStandby
		// Short enough that restarting an owner under its writes would
		// end in a failover during the roll.
		mc.Spec.Standby.FailoverAfter = metav1.Duration{Duration: 2 * time.Second}
		Expect(k8sClient.Create(ctx, mc)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, mc))).To(Succeed()) })
		kubelet := startKubelet(name)
		waitAvailable(name)
		sdk, err := meshclient.New(ctx, meshclient.Options{Addresses: kubelet.dataAddrs(), RetryMax: 200 * time.Millisecond, Credentials: dataCredentials(name)})
		Expect(err).NotTo(HaveOccurred())
		return kubelet, sdk
	}

	// expectNoFailover: the roll handed every shard off before its
	// owner's pod went, so nothing was failed over.
	expectNoFailover := func(name string, w *rollWatch) {
		GinkgoHelper()
		w.mu.Lock()
		defer w.mu.Unlock()
		Expect(w.ownerGone).To(BeEmpty(), "pods deleted while owning shards")
		Expect(eventReasons(Default, name, corev1.EventTypeNormal)).NotTo(ContainElement("Promoted"))
		Expect(eventReasons(Default, name, corev1.EventTypeWarning)).NotTo(ContainElements("FailingOver", "RollingUpdateUnsafe"))
	}

	It("rolls an image change and then a config change one pod at a time, standby first, under ingest, losing nothing acknowledged", func() {
		const name = "roll"
		_, sdk := create(name)
		w := watchRoll(name, 4)
		load := startIngest(sdk)
		Eventually(load.count, 10*time.Second).Should(BeNumerically(">", 100))

		By("changing the image: each pod is replaced once, roll-3 (the standby) first, actives after handing their shards off")
		start := time.Now()
		revBefore := getSTS(name)(Default).Status.UpdateRevision
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Image = "example.org/mesh-node:v2" })
		Eventually(func(g Gomega) *meshv1.UpdateStatus { return getCluster(g, name).Status.Update }, timeout, 20*time.Millisecond).ShouldNot(BeNil())
		expectRolled(name, 1, 3*time.Minute)
		fmt.Fprintf(GinkgoWriter, "image roll of 4 pods (3 actives with handoffs) under ingest: %s\n", time.Since(start).Round(time.Millisecond))
		Expect(getSTS(name)(Default).Status.UpdateRevision).NotTo(Equal(revBefore))
		replaced := w.replacedSince(0)
		Expect(replaced).To(HaveLen(4), "%v", replaced)
		Expect(replaced).To(ConsistOf("roll-0", "roll-1", "roll-2", "roll-3"))
		Expect(replaced[0]).To(Equal("roll-3"), "the standby goes first: %v", replaced)
		Expect(replaced[1:]).To(Equal([]string{"roll-2", "roll-1", "roll-0"}), "then the actives, highest ordinal first")
		w.mu.Lock()
		Expect(w.maxDown).To(BeNumerically("<=", 1), "one pod at a time")
		w.mu.Unlock()
		expectNoFailover(name, w)
		normal := eventReasons(Default, name, corev1.EventTypeNormal)
		Expect(countReasons(normal, "RollingUpdateStarted")).To(Equal(1))
		Expect(countReasons(normal, "PodUpdated")).To(Equal(4))
		Expect(normal).To(ContainElements("ShardMoved", "RestartingPod"))
		n := load.count()
		Eventually(load.count, 10*time.Second).Should(BeNumerically(">", n+100), "ingest goes on after the roll")

		By("changing the retention (node configuration): the pods roll the same way")
		start = time.Now()
		cmBefore := &corev1.ConfigMap{}
		Expect(k8sClient.Get(ctx, key(resources.ConfigMapName(clusterOf(name))), cmBefore)).To(Succeed())
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Retention.MaxEvents = ptrTo[int64](50_000_000) })
		expectRolled(name, 2, 3*time.Minute)
		fmt.Fprintf(GinkgoWriter, "config roll of 4 pods under ingest: %s\n", time.Since(start).Round(time.Millisecond))
		cm := &corev1.ConfigMap{}
		Expect(k8sClient.Get(ctx, key(resources.ConfigMapName(clusterOf(name))), cm)).To(Succeed())
		Expect(cm.Data).NotTo(Equal(cmBefore.Data))
		replaced = w.replacedSince(4)
		Expect(replaced).To(Equal([]string{"roll-3", "roll-2", "roll-1", "roll-0"}))
		w.mu.Lock()
		Expect(w.maxDown).To(BeNumerically("<=", 1), "one pod at a time")
		w.mu.Unlock()
		expectNoFailover(name, w)
		Expect(countReasons(eventReasons(Default, name, corev1.EventTypeNormal), "PodUpdated")).To(Equal(8))

		By("reading back every acknowledged event exactly once")
		expectEveryAckRead(sdk, load)
	})

	It("keeps every shard acknowledging under ackPolicy Standby while the only standby restarts", func() {
		const name = "rollsb"
		// Gates in front of the nodes' admin ports let the test hold the
		// restarted standby back, as a slow start would.
		gateClusterWire(name)
		var mu sync.Mutex
		kubelet, _ := create(name)
		// The writer's own SDK retries quickly (RetryMax 50 ms), so its
		// budget can be short.
		sdk, err := meshclient.New(ctx, meshclient.Options{Addresses: kubelet.dataAddrs(), RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, Credentials: dataCredentials(name)})
		Expect(err).NotTo(HaveOccurred())
		w := watchRoll(name, 4)
		standby := name + "-3"
		oldGate := adminGateOf(standby)
		mc := getCluster(Default, name)
		shards := int(mc.Spec.Shards.Count)
		// keys[i] lands on shard i.
		keys := make([][]byte, shards)
		for n, left := 0, shards; left > 0; n++ {
			k := []byte(fmt.Sprintf("sb%d", n))
			if id := topology.KeyShard(k, shards); keys[id] == nil {
				keys[id], left = k, left-1
			}
		}

		// Every recorded status, in order (a watch): the one that first
		// decides the standby's deletion (step Restarting) must already
		// give each of its shards a ready active follower besides it.
		var atRestart *meshv1.MeshCluster
		wctx, wcancel := context.WithCancel(ctx)
		watched := make(chan struct{})
		mw, err := k8sClient.Watch(wctx, &meshv1.MeshClusterList{}, client.InNamespace("default"))
		Expect(err).NotTo(HaveOccurred())
		go func() {
			defer close(watched)
			for ev := range mw.ResultChan() {
				got, ok := ev.Object.(*meshv1.MeshCluster)
				if !ok || got.Name != name || got.Status.Update == nil {
					continue
				}
				if u := got.Status.Update; u.Pod == standby && u.Step == "Restarting" {
					mu.Lock()
					if atRestart == nil {
						atRestart = got.DeepCopy()
					}
					mu.Unlock()
				}
			}
		}()
		DeferCleanup(func() {
			mw.Stop()
			wcancel()
			<-watched
		})

		By("writing to every shard, each ingest bounded by a budget of a few SDK retries, while the image change restarts the standby and its return is held back")
		// budget is a few of the SDK's retries (RetryMax 50 ms), above
		// an ingest's usual latency under the roll's topology pushes
		// (tens of ms), well below the time the restarted standby is held
		// back (hold) and below the failover path's reaction to a
		// follower gone (shards without a ready follower get a live one,
		// planLiveFollowers, some hundreds of ms after the pod went).
		const budget = 200 * time.Millisecond
		const hold = 3 * time.Second
		var (
			inWindow bool
			failures []string
			acked    = make([]int, shards)
			slowest  time.Duration
		)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for id := range shards {
			wg.Go(func() {
				defer GinkgoRecover()
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					ictx, cancel := context.WithTimeout(ctx, budget)
					began := time.Now()
					_, err := sdk.Ingest(ictx, meshclient.Event{Key: keys[id], Payload: []byte(fmt.Sprintf("%d/%d", id, n))})
					took := time.Since(began)
					cancel()
					mu.Lock()
					if inWindow {
						slowest = max(slowest, took)
						if err != nil {
							failures = append(failures, fmt.Sprintf("shard %d: %v", id, err))
						} else {
							acked[id]++
						}
					}
					mu.Unlock()
					time.Sleep(10 * time.Millisecond)
				}
			})
		}
		defer func() {
			close(stop)
			wg.Wait()
		}()
		mu.Lock()
		inWindow = true
		mu.Unlock()
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Image = "example.org/mesh-node:v4" })
		// The new standby pod's node takes no topology push (and is not
		// ready) until hold passed: it follows nothing meanwhile.
		Eventually(func() *wireGate {
			if len(w.replacedSince(0)) == 0 {
				return oldGate
			}
			gatedMu.Lock()
			defer gatedMu.Unlock()
			return gates[fmt.Sprintf("%s/%d", standby, nodeconfig.AdminPort)]
		}, time.Minute, 2*time.Millisecond).ShouldNot(BeIdenticalTo(oldGate))
		held := adminGateOf(standby)
		held.pause()
		time.Sleep(hold)
		held.resume()
		// The window: from the change until the standby's restart is over
		// (the roll moved on to the first active).
		Eventually(func(g Gomega) {
			u := getCluster(g, name).Status.Update
			g.Expect(u).NotTo(BeNil())
			g.Expect(u.Pod).To(Equal(name + "-2"))
		}, 2*time.Minute, 20*time.Millisecond).Should(Succeed())
		mu.Lock()
		inWindow = false
		got, perShard := slices.Clone(failures), slices.Clone(acked)
		mu.Unlock()
		Expect(w.replacedSince(0)).To(Equal([]string{standby}), "the standby restarted in the window")
		Expect(got).To(BeEmpty(), "ingests not acknowledged within %s while the standby restarted", budget)
		for id, n := range perShard {
			Expect(n).To(BeNumerically(">", 0), "shard %d written during the standby's restart", id)
		}
		mu.Lock()
		fmt.Fprintf(GinkgoWriter, "acks per shard during the standby's restart: %v, slowest ingest %s\n", perShard, slowest)
		decided := atRestart
		mu.Unlock()
		Expect(decided).NotTo(BeNil(), "the standby's restart was recorded")
		actives := map[string]bool{}
		for _, m := range decided.Status.Members {
			if m.Role == meshv1.RoleActive && m.Ready {
				actives[m.Name] = true
			}
		}
		for _, s := range decided.Status.Shards {
			Expect(slices.ContainsFunc(s.Followers, func(f string) bool { return actives[f] && f != s.Owner })).To(BeTrue(),
				"epoch %d: shard %d (followers %v) had no ready active follower when the standby's restart was decided", decided.Status.Epoch, s.ID, s.Followers)
		}

		By("completing the roll: the actives added as followers are dropped again")
		expectRolled(name, 1, 3*time.Minute)
		for _, s := range getCluster(Default, name).Status.Shards {
			Expect(s.Followers).To(Equal([]string{standby}), "shard %d follows only the standby", s.ID)
		}
		expectNoFailover(name, w)
	})

	It("resumes a roll from status after an operator restart, holds it while paused, and completes it once", func() {
		const name = "rollrs"
		_, sdk := create(name)
		w := watchRoll(name, 4)
		load := startIngest(sdk)
		Eventually(load.count, 10*time.Second).Should(BeNumerically(">", 100))

		By("changing the image and restarting the operator while an active hands its shards off")
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Image = "example.org/mesh-node:v3" })
		Eventually(func(g Gomega) {
			u := getCluster(g, name).Status.Update
			g.Expect(u).NotTo(BeNil())
			g.Expect(u.Pod).To(Equal("rollrs-2"))
			g.Expect(u.Step).To(Equal("Moving"))
		}, 2*time.Minute, 10*time.Millisecond).Should(Succeed())
		stopManager()
		mid := getCluster(Default, name)
		fmt.Fprintf(GinkgoWriter, "operator stopped at epoch %d, update %+v, migrations %v\n", mid.Status.Epoch, *mid.Status.Update, mid.Status.Migrations)
		startManager()

		By("pausing the cluster once the roll moves on to the next active: nothing more is replaced")
		Eventually(func(g Gomega) {
			u := getCluster(g, name).Status.Update
			g.Expect(u).NotTo(BeNil())
			g.Expect(u.Pod).To(Equal("rollrs-1"))
			g.Expect(u.Step).To(Equal("Moving"))
		}, 2*time.Minute, 10*time.Millisecond).Should(Succeed())
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Paused = true })
		Eventually(func(g Gomega) meshv1.Phase { return getCluster(g, name).Status.Phase }, timeout, interval).Should(Equal(meshv1.PhasePaused))
		n := len(w.replacedSince(0))
		paused := getCluster(Default, name).Status
		Consistently(func(g Gomega) {
			g.Expect(w.replacedSince(n)).To(BeEmpty())
			got := getCluster(g, name)
			g.Expect(got.Status.Update).To(Equal(paused.Update))
			g.Expect(got.Status.Epoch).To(Equal(paused.Epoch))
		}, 3*time.Second, 100*time.Millisecond).Should(Succeed())
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Paused = false })

		By("completing from the record: every pod replaced exactly once")
		expectRolled(name, 1, 3*time.Minute)
		replaced := w.replacedSince(0)
		Expect(replaced).To(Equal([]string{"rollrs-3", "rollrs-2", "rollrs-1", "rollrs-0"}))
		w.mu.Lock()
		for pod, uids := range w.uids {
			Expect(uids).To(HaveLen(2), "pod %s replaced exactly once", pod)
		}
		w.mu.Unlock()
		expectNoFailover(name, w)
		normal := eventReasons(Default, name, corev1.EventTypeNormal)
		// An Event in flight when the operator stopped may be lost.
		Expect(countReasons(normal, "RollingUpdateStarted")).To(BeNumerically("<=", 1), "the restarted operator resumed the roll instead of starting another")
		Expect(countReasons(normal, "PodUpdated")).To(BeNumerically("<=", 4))

		By("reading back every acknowledged event exactly once")
		expectEveryAckRead(sdk, load)
	})
})
