package controllers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	meshclient "github.com/purplerain/mesh-operator/client"
	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/topology"
)

// ingestLoad ingests continuously through the SDK from one writer and
// records every acknowledged event. Keyed events carry their key and a
// sequence number in the payload ("<n>/<key>"), so the read-back can check
// that one writer's events of a key are stored in the order it sent them.
type ingestLoad struct {
	mu     sync.Mutex
	acked  map[string]bool
	failed int
	stopCh chan struct{}
	done   chan struct{}
}

func startIngest(sdk *meshclient.Client) *ingestLoad {
	l := &ingestLoad{acked: map[string]bool{}, stopCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer GinkgoRecover()
		defer close(l.done)
		for n := 0; ; n += 8 {
			select {
			case <-l.stopCh:
				return
			default:
			}
			var batch []meshclient.Event
			for i := n; i < n+8; i++ {
				e := meshclient.Event{Payload: []byte(fmt.Sprintf("%d/", i))}
				if i%2 == 1 {
					k := fmt.Sprintf("k%d", i%13)
					e.Key, e.Payload = []byte(k), []byte(fmt.Sprintf("%d/%s", i, k))
				}
				batch = append(batch, e)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := sdk.Ingest(ctx, batch...)
			cancel()
			l.mu.Lock()
			if err != nil {
				l.failed++
			} else {
				for _, e := range batch {
					l.acked[string(e.Payload)] = true
				}
			}
			l.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	DeferCleanup(l.stop)
	return l
}

func (l *ingestLoad) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

func (l *ingestLoad) stop() {
	select {
	case <-l.stopCh:
	default:
		close(l.stopCh)
	}
	<-l.done
}

// expectEveryAckRead reads the whole cluster from the beginning and checks
// that every acknowledged event is there, that seqs grow per shard, and
// that each key's events are stored in the order they were sent.
func expectEveryAckRead(sdk *meshclient.Client, l *ingestLoad) {
	l.stop()
	ctx := context.Background()
	Expect(sdk.Refresh(ctx)).To(Succeed())
	poller, err := sdk.NewPoller("")
	Expect(err).NotTo(HaveOccurred())
	seen := map[string]bool{}
	lastSeq := map[uint16]uint64{}
	lastOfKey := map[string]int{}
	missing := func() int {
		n := 0
		for p := range l.acked {
			if !seen[p] {
				n++
			}
		}
		return n
	}
	Eventually(func(g Gomega) int {
		page, err := poller.Poll(ctx, 500)
		g.Expect(err).NotTo(HaveOccurred())
		for _, e := range page.Events {
			prev, ok := lastSeq[e.Shard]
			g.Expect(!ok || e.Seq > prev).To(BeTrue(), "shard %d: seq %d after %d", e.Shard, e.Seq, prev)
			lastSeq[e.Shard] = e.Seq
			p := string(e.Payload)
			if seen[p] {
				continue // a retried, unacknowledged batch may be stored twice
			}
			seen[p] = true
			num, k, _ := strings.Cut(p, "/")
			if k == "" || !l.acked[p] {
				continue
			}
			i, _ := strconv.Atoi(num)
			if last, ok := lastOfKey[k]; ok {
				g.Expect(i).To(BeNumerically(">", last), "key %s: event %d stored after %d", k, i, last)
			}
			lastOfKey[k] = i
		}
		return missing()
	}, 30*time.Second, 20*time.Millisecond).Should(BeZero(), "acknowledged events not read back")
	fmt.Fprintf(GinkgoWriter, "read back all %d acknowledged events (%d ingest calls failed and were not acknowledged)\n", len(l.acked), l.failed)
}

func ownedCounts(mc *meshv1.MeshCluster) map[string]int {
	out := map[string]int{}
	for _, m := range mc.Status.Members {
		if m.Role == meshv1.RoleActive {
			out[m.Name] = 0
		}
	}
	for _, s := range mc.Status.Shards {
		out[s.Owner]++
	}
	return out
}

func ordinal(cluster, pod string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(pod, cluster+"-"))
	Expect(err).NotTo(HaveOccurred())
	return n
}

func waitAvailable(name string) *meshv1.MeshCluster {
	var got *meshv1.MeshCluster
	Eventually(func(g Gomega) {
		got = getCluster(g, name)
		g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, meshv1.ConditionAvailable)).To(BeTrue(), "%v", got.Status.Conditions)
		g.Expect(got.Status.Phase).To(Equal(meshv1.PhaseRunning))
	}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
	return got
}

func updateCluster(name string, mutate func(*meshv1.MeshCluster)) {
	Eventually(func(g Gomega) {
		got := getCluster(g, name)
		mutate(got)
		g.Expect(k8sClient.Update(context.Background(), got)).To(Succeed())
	}, timeout, interval).Should(Succeed())
}

func eventReasons(g Gomega, name, typ string) []string {
	var out []string
	for _, e := range eventsFor(g, name) {
		if e.Type == typ {
			out = append(out, e.Reason)
		}
	}
	return out
}

var _ = Describe("Orchestration with real nodes", func() {
	ctx := context.Background()

	create := func(name string, mutate func(*meshv1.MeshCluster)) (*testKubelet, *meshclient.Client) {
		mc := newCluster(name)
		mc.Spec.Shards.Count = 8
		mutate(mc)
		Expect(k8sClient.Create(ctx, mc)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, mc))).To(Succeed()) })
		kubelet := startKubelet(name)
		waitAvailable(name)
		sdk, err := meshclient.New(ctx, meshclient.Options{Addresses: kubelet.dataAddrs(), RetryMax: 200 * time.Millisecond, Credentials: dataCredentials(name)})
		Expect(err).NotTo(HaveOccurred())
		return kubelet, sdk
	}

	It("rebalances a scale-up 3→5 and scales down safely 5→2 under ingest, losing nothing acknowledged", func() {
		const name = "scale"
		_, sdk := create(name, func(mc *meshv1.MeshCluster) { mc.Spec.Standby.AckPolicy = meshv1.AckStandby })
		load := startIngest(sdk)
		Eventually(load.count, 10*time.Second).Should(BeNumerically(">", 100))

		By("scaling up to 5 actives: shards move to the new ones, max skew 1")
		start := time.Now()
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Nodes = 5 })
		Eventually(func(g Gomega) {
			got := getCluster(g, name)
			counts := ownedCounts(got)
			g.Expect(counts).To(HaveLen(5), "%v", counts)
			lo, hi := 1<<30, 0
			for _, n := range counts {
				lo, hi = min(lo, n), max(hi, n)
			}
			g.Expect(hi-lo).To(BeNumerically("<=", 1), "%v", counts)
			g.Expect(got.Status.Members).To(HaveLen(6))
			g.Expect(meta.IsStatusConditionFalse(got.Status.Conditions, meshv1.ConditionProgressing)).To(BeTrue(), "%v", got.Status.Conditions)
			for _, s := range got.Status.Shards {
				g.Expect(s.Fenced).To(BeFalse())
			}
		}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
		fmt.Fprintf(GinkgoWriter, "scale-up 3→5 balanced in %s\n", time.Since(start).Round(time.Millisecond))
		Eventually(func(g Gomega) []string { return eventReasons(g, name, corev1.EventTypeNormal) }, timeout, interval).Should(ContainElement("ShardMoved"))
		before := load.count()
		Eventually(load.count, 10*time.Second).Should(BeNumerically(">", before+100), "ingest goes on after the moves")

		By("scaling down to 2 actives: the StatefulSet shrinks only after the leaving members left the topology")
		violations := make(chan string, 1)
		watchCtx, stopWatch := context.WithCancel(ctx)
		watched := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			defer close(watched)
			for watchCtx.Err() == nil {
				// StatefulSet first, then the cluster: a shrink must be
				// preceded by the record of the members' removal.
				sts := getSTS(name)(Default)
				mc := getCluster(Default, name)
				for _, m := range mc.Status.Members {
					if ordinal(name, m.Name) >= int(*sts.Spec.Replicas) {
						select {
						case violations <- fmt.Sprintf("StatefulSet at %d replicas while %s is a member (epoch %d)", *sts.Spec.Replicas, m.Name, mc.Status.Epoch):
						default:
						}
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		start = time.Now()
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Nodes = 2 })
		Eventually(func(g Gomega) {
			got := getCluster(g, name)
			g.Expect(*getSTS(name)(g).Spec.Replicas).To(Equal(int32(3)))
			var names []string
			for _, m := range got.Status.Members {
				names = append(names, fmt.Sprintf("%s:%s", m.Name, m.Role))
				g.Expect(m.Leaving).To(BeFalse())
			}
			g.Expect(names).To(ConsistOf("scale-0:active", "scale-1:active", "scale-2:standby"))
			g.Expect(ownedCounts(got)).To(Equal(map[string]int{"scale-0": 4, "scale-1": 4}))
			for _, s := range got.Status.Shards {
				g.Expect(s.Followers).To(ContainElement("scale-2"), "shard %d", s.ID)
				g.Expect(s.Followers).NotTo(ContainElements("scale-3", "scale-4", "scale-5"), "shard %d", s.ID)
			}
			g.Expect(meta.IsStatusConditionFalse(got.Status.Conditions, meshv1.ConditionScaleDownBlocked)).To(BeTrue())
		}, 90*time.Second, 100*time.Millisecond).Should(Succeed())
		fmt.Fprintf(GinkgoWriter, "scale-down 5→2 done in %s\n", time.Since(start).Round(time.Millisecond))
		stopWatch()
		<-watched
		Expect(violations).NotTo(Receive())
		Eventually(func(g Gomega) []string { return eventReasons(g, name, corev1.EventTypeNormal) }, timeout, interval).Should(ContainElements("Drained", "MembersLeft", "ScaledDown"))
		before = load.count()
		Eventually(load.count, 10*time.Second).Should(BeNumerically(">", before+100), "ingest goes on after the scale-down")

		By("reading back every acknowledged event")
		expectEveryAckRead(sdk, load)
	})

	It("refuses a scale-down whose leaving node is unreachable, and keeps reconciling the rest", func() {
		const name = "stuck"
		kubelet, _ := create(name, func(mc *meshv1.MeshCluster) {
			mc.Spec.Standby.FailoverAfter = metav1.Duration{Duration: time.Hour}
		})
		// stuck-2 becomes a standby at nodes 2: its shards must move first.
		kubelet.kill("stuck-2")
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Nodes = 2 })
		Eventually(func(g Gomega) {
			got := getCluster(g, name)
			c := meta.FindStatusCondition(got.Status.Conditions, meshv1.ConditionScaleDownBlocked)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Message).To(ContainSubstring("stuck-2 is unreachable"))
			g.Expect(eventReasons(g, name, corev1.EventTypeWarning)).To(ContainElement("ScaleDownBlocked"))
		}, timeout, interval).Should(Succeed())

		By("not shrinking, and still applying other changes")
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Image = "example.org/mesh-node:v2" })
		Eventually(func(g Gomega) string {
			return getSTS(name)(g).Spec.Template.Spec.Containers[0].Image
		}, timeout, interval).Should(Equal("example.org/mesh-node:v2"))
		Consistently(func(g Gomega) int32 { return *getSTS(name)(g).Spec.Replicas }, 2*time.Second, interval).Should(Equal(int32(4)))
		got := getCluster(Default, name)
		Expect(got.Status.Members).To(HaveLen(4))
		Expect(ownedCounts(got)["stuck-2"]).To(BeNumerically(">", 0))

		By("clearing the condition when the scale-down is withdrawn")
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Nodes = 3 })
		Eventually(func(g Gomega) bool {
			return meta.IsStatusConditionFalse(getCluster(g, name).Status.Conditions, meshv1.ConditionScaleDownBlocked)
		}, timeout, interval).Should(BeTrue())
	})

	It("promotes the standby when an active's node dies, losing nothing acknowledged under ackPolicy Standby", func() {
		const name = "fo"
		kubelet, sdk := create(name, func(mc *meshv1.MeshCluster) {
			mc.Spec.Nodes = 2
			mc.Spec.Standby.AckPolicy = meshv1.AckStandby
			mc.Spec.Standby.FailoverAfter = metav1.Duration{Duration: time.Second}
		})
		before := getCluster(Default, name)
		var victimShard uint16
		for _, s := range before.Status.Shards {
			if s.Owner == "fo-0" {
				victimShard = uint16(s.ID)
				break
			}
		}
		load := startIngest(sdk)
		Eventually(load.count, 10*time.Second).Should(BeNumerically(">", 100))

		By("killing fo-0's node (the pod stays, not ready)")
		killed := time.Now()
		kubelet.kill("fo-0")

		By("promoting fo-2 for fo-0's shards at a new epoch")
		Eventually(func(g Gomega) {
			got := getCluster(g, name)
			g.Expect(ownedCounts(got)).NotTo(HaveKey("fo-0"))
			g.Expect(ownedCounts(got)["fo-2"]).To(BeNumerically(">", 0))
			g.Expect(got.Status.Epoch).To(BeNumerically(">", before.Status.Epoch))
			for _, s := range got.Status.Shards {
				g.Expect(s.Owner).To(BeElementOf("fo-1", "fo-2"))
			}
		}, 30*time.Second, 50*time.Millisecond).Should(Succeed())
		promoted := time.Since(killed)
		Eventually(func(g Gomega) []string { return eventReasons(g, name, corev1.EventTypeNormal) }, timeout, interval).Should(ContainElement("Promoted"))
		Eventually(func(g Gomega) []string { return eventReasons(g, name, corev1.EventTypeWarning) }, timeout, interval).Should(ContainElement("FailingOver"))

		By("accepting writes to a shard fo-0 owned")
		var k []byte
		for i := 0; ; i++ {
			k = []byte(fmt.Sprintf("probe-%d", i))
			if topology.KeyShard(k, 8) == victimShard {
				break
			}
		}
		Eventually(func() error {
			ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err := sdk.Ingest(ictx, meshclient.Event{Key: k, Payload: []byte("probe")})
			return err
		}, 30*time.Second, 50*time.Millisecond).Should(Succeed())
		fmt.Fprintf(GinkgoWriter, "failover: promoted %s after the kill (failoverAfter 1s, lease 2s), shard %d writable %s after the kill\n",
			promoted.Round(time.Millisecond), victimShard, time.Since(killed).Round(time.Millisecond))

		By("bringing fo-0 back as a standby that follows every shard")
		kubelet.revive("fo-0")
		Eventually(func(g Gomega) {
			got := getCluster(g, name)
			var roles []string
			for _, m := range got.Status.Members {
				roles = append(roles, fmt.Sprintf("%s:%s:%v", m.Name, m.Role, m.Ready))
			}
			g.Expect(roles).To(ConsistOf("fo-0:standby:true", "fo-1:active:true", "fo-2:active:true"))
			g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, meshv1.ConditionAvailable)).To(BeTrue())
			for _, s := range got.Status.Shards {
				g.Expect(s.Followers).To(ContainElement("fo-0"), "shard %d", s.ID)
			}
		}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
		n := load.count()
		Eventually(load.count, 10*time.Second).Should(BeNumerically(">", n+100))

		By("reading back every acknowledged event")
		expectEveryAckRead(sdk, load)
		Expect(slices.Contains(kubelet.dataAddrs(), "")).To(BeFalse())
	})

	It("never lets two owners accept writes: a running owner reported not ready keeps writing only until it is failed over, and nothing it acknowledged is lost", func() {
		const name = "split"
		kubelet, sdk := create(name, func(mc *meshv1.MeshCluster) {
			mc.Spec.Nodes = 2
			mc.Spec.Standby.AckPolicy = meshv1.AckStandby
			mc.Spec.Standby.FailoverAfter = metav1.Duration{Duration: time.Second}
		})
		before := getCluster(Default, name)
		var shard uint16
		for _, s := range before.Status.Shards {
			if s.Owner == "split-0" {
				shard = uint16(s.ID)
				break
			}
		}
		var dk string
		for i := 0; ; i++ {
			dk = fmt.Sprintf("d%d", i)
			if topology.KeyShard([]byte(dk), 8) == shard {
				break
			}
		}
		load := startIngest(sdk)

		By("writing straight to split-0's data API, whatever the topology says")
		oldAddr := net.JoinHostPort(kubelet.ip("split-0"), "9441")
		tokenHeader := dataTokenHeader(name)
		stopDirect := make(chan struct{})
		directDone := make(chan int)
		go func() {
			defer GinkgoRecover()
			hc := &http.Client{Timeout: 2 * time.Second}
			acked, refused := 0, 0
			defer func() {
				directDone <- acked
				fmt.Fprintf(GinkgoWriter, "direct writes to the old owner: %d acknowledged, %d refused\n", acked, refused)
			}()
			for n := 10_000_000; ; n++ {
				select {
				case <-stopDirect:
					return
				default:
				}
				payload := fmt.Sprintf("%d/%s", n, dk)
				body, _ := json.Marshal(dataapi.IngestRequest{Events: []dataapi.Event{{Key: []byte(dk), Payload: []byte(payload)}}})
				req, _ := http.NewRequest(http.MethodPost, "http://"+oldAddr+"/v1/ingest", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set(identity.HeaderName, tokenHeader)
				resp, err := hc.Do(req)
				if err == nil {
					var ir dataapi.IngestResponse
					ok := resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&ir) == nil && len(ir.Acks) == 1
					resp.Body.Close()
					if ok {
						load.mu.Lock()
						load.acked[payload] = true
						load.mu.Unlock()
						acked++
					} else {
						refused++
					}
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		Eventually(load.count, 10*time.Second).Should(BeNumerically(">", 100))

		By("reporting split-0 not ready while its node keeps running")
		kubelet.markNotReady("split-0")
		Eventually(func(g Gomega) {
			got := getCluster(g, name)
			g.Expect(ownedCounts(got)).NotTo(HaveKey("split-0"))
			for _, m := range got.Status.Members {
				if m.Name == "split-0" {
					g.Expect(m.Role).To(Equal(meshv1.RoleStandby))
				}
			}
		}, 30*time.Second, 50*time.Millisecond).Should(Succeed())
		n := load.count()
		Eventually(load.count, 10*time.Second).Should(BeNumerically(">", n+100))
		close(stopDirect)
		Expect(<-directDone).To(BeNumerically(">", 0))

		By("reading back every event either owner acknowledged")
		expectEveryAckRead(sdk, load)
	})

	It("never pushes ownership to an owner that came back empty (memory mode), and fails it over at once", func() {
		const name = "reborn"
		kubelet, sdk := create(name, func(mc *meshv1.MeshCluster) {
			mc.Spec.Nodes = 2
			mc.Spec.Standby.AckPolicy = meshv1.AckStandby
			// Only the restart detection can fail it over in this spec.
			mc.Spec.Standby.FailoverAfter = metav1.Duration{Duration: time.Hour}
		})
		load := startIngest(sdk)
		Eventually(load.count, 10*time.Second).Should(BeNumerically(">", 100))

		By("replacing reborn-0's pod by a fresh one (new address, empty log)")
		kubelet.revive("reborn-0")
		Eventually(func(g Gomega) {
			got := getCluster(g, name)
			g.Expect(ownedCounts(got)).NotTo(HaveKey("reborn-0"))
			var roles []string
			for _, m := range got.Status.Members {
				roles = append(roles, fmt.Sprintf("%s:%s:%v", m.Name, m.Role, m.Ready))
			}
			g.Expect(roles).To(ConsistOf("reborn-0:standby:true", "reborn-1:active:true", "reborn-2:active:true"))
		}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
		Eventually(func(g Gomega) []string { return eventReasons(g, name, corev1.EventTypeNormal) }, timeout, interval).Should(ContainElement("Promoted"))
		n := load.count()
		Eventually(load.count, 10*time.Second).Should(BeNumerically(">", n+100))

		By("reading back every acknowledged event")
		expectEveryAckRead(sdk, load)
	})

	It("finishes a scale-down exactly once when the operator restarts in the middle, losing nothing acknowledged", func() {
		const name = "resume"
		_, sdk := create(name, func(mc *meshv1.MeshCluster) {
			mc.Spec.Standby.AckPolicy = meshv1.AckStandby
			mc.Spec.Storage.PVCRetention = meshv1.PVCDelete
		})
		// The claims the StatefulSet controller would have made (none
		// runs here): only the leaving ordinal's goes, after the shrink.
		for ord := range 4 {
			Expect(k8sClient.Create(ctx, dataPVC(clusterOf(name), ord))).To(Succeed())
		}
		load := startIngest(sdk)
		Eventually(load.count, 10*time.Second).Should(BeNumerically(">", 100))

		By("lowering nodes to 2 and restarting the operator once the scale-down moves shards")
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Nodes = 2 })
		Eventually(func(g Gomega) []string { return eventReasons(g, name, corev1.EventTypeNormal) }, timeout, 10*time.Millisecond).Should(ContainElement("ShardMoving"))
		stopManager()
		mid := getCluster(Default, name)
		fmt.Fprintf(GinkgoWriter, "operator stopped at epoch %d, migrations %v\n", mid.Status.Epoch, mid.Status.Migrations)
		startManager()

		By("completing from the record in status")
		Eventually(func(g Gomega) {
			got := getCluster(g, name)
			g.Expect(*getSTS(name)(g).Spec.Replicas).To(Equal(int32(3)))
			var names []string
			for _, m := range got.Status.Members {
				names = append(names, fmt.Sprintf("%s:%s", m.Name, m.Role))
			}
			g.Expect(names).To(ConsistOf("resume-0:active", "resume-1:active", "resume-2:standby"))
			g.Expect(ownedCounts(got)).To(Equal(map[string]int{"resume-0": 4, "resume-1": 4}))
			g.Expect(got.Status.Migrations).To(BeEmpty())
			for _, s := range got.Status.Shards {
				g.Expect(s.Fenced).To(BeFalse())
			}
		}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
		Eventually(func(g Gomega) []string { return eventReasons(g, name, corev1.EventTypeNormal) }, timeout, interval).Should(ContainElement("ScaledDown"))
		Consistently(func(g Gomega) map[string]int {
			n := map[string]int{}
			for _, r := range eventReasons(g, name, corev1.EventTypeNormal) {
				n[r]++
			}
			return map[string]int{"MembersLeft": n["MembersLeft"], "ScaledDown": n["ScaledDown"]}
		}, time.Second, 200*time.Millisecond).Should(Equal(map[string]int{"MembersLeft": 1, "ScaledDown": 1}))

		By("deleting the leaving ordinal's data PVC (pvcRetention Delete), keeping the others")
		Eventually(func(g Gomega) []string {
			var kept []string
			for ord := range 4 {
				pvc := &corev1.PersistentVolumeClaim{}
				if err := k8sClient.Get(ctx, key(fmt.Sprintf("data-%s-%d", name, ord)), pvc); err == nil && pvc.DeletionTimestamp == nil {
					kept = append(kept, pvc.Name)
				}
			}
			return kept
		}, timeout, interval).Should(ConsistOf("data-resume-0", "data-resume-1", "data-resume-2"))

		By("reading back every acknowledged event")
		expectEveryAckRead(sdk, load)
	})

	It("restarts a kept pod whose node was drained (a cancelled scale-down), and it rejoins", func() {
		const name = "cancel"
		_, _ = create(name, func(mc *meshv1.MeshCluster) {})
		pod := &corev1.Pod{}
		Expect(k8sClient.Get(ctx, key("cancel-2"), pod)).To(Succeed())
		oldUID, oldIP := pod.UID, pod.Status.PodIP
		patch := client.MergeFrom(pod.DeepCopy())
		pod.Annotations = map[string]string{"mesh.purplerain.io/drained": "true"}
		Expect(k8sClient.Patch(ctx, pod, patch)).To(Succeed())
		Eventually(func(g Gomega) {
			p := &corev1.Pod{}
			g.Expect(k8sClient.Get(ctx, key("cancel-2"), p)).To(Succeed())
			g.Expect(p.UID).NotTo(Equal(oldUID))
			g.Expect(p.Annotations).NotTo(HaveKey("mesh.purplerain.io/drained"))
			got := getCluster(g, name)
			g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, meshv1.ConditionAvailable)).To(BeTrue())
			for _, m := range got.Status.Members {
				if m.Name == "cancel-2" {
					g.Expect(m.Address).To(Equal(p.Status.PodIP))
					g.Expect(m.Address).NotTo(Equal(oldIP))
					g.Expect(m.Ready).To(BeTrue())
				}
			}
		}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
		Eventually(func(g Gomega) []string { return eventReasons(g, name, corev1.EventTypeNormal) }, timeout, interval).Should(ContainElement("ScaleDownCancelled"))
	})
})
