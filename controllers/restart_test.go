package controllers_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sort"
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
	"github.com/purplerain/mesh-operator/client/clienttest"
	"github.com/purplerain/mesh-operator/controllers"
	"github.com/purplerain/mesh-operator/controllers/resources"
	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node/adminapi"
	"github.com/purplerain/mesh-operator/node/adminclient"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
)

// crasher arms the operator's failpoints for one cluster: the first time
// the operator reaches a crash point (step, epoch) it has not crashed at
// yet, the step blocks there (nothing more of that operator runs) and
// the test restarts the operator. Crashing once per (step, epoch) walks
// an operation through every failpoint in turn: the fresh operator passes
// the point it died at and dies at the next one.
type crasher struct {
	cluster string
	limit   int

	mu      sync.Mutex
	armed   bool
	seen    map[string]bool
	crashes []string
	ch      chan string
}

func armCrasher(cluster string, limit int) *crasher {
	c := &crasher{cluster: cluster, limit: limit, seen: map[string]bool{}, ch: make(chan string, 1)}
	restore := controllers.SetFailpoint(c.hook)
	DeferCleanup(restore)
	return c
}

func (c *crasher) hook(ctx context.Context, cluster types.NamespacedName, step string, epoch uint64) error {
	if cluster.Name != c.cluster {
		return nil
	}
	key := fmt.Sprintf("%s@%d", step, epoch)
	c.mu.Lock()
	// A crash right after a record ends that step for good (a fresh
	// operator's lease keeper pushes the record), so the push crash
	// point after it would never be reached: crash after the records of
	// odd epochs only, and after the pushes of the others.
	if step == controllers.StepRecorded && epoch%2 == 0 {
		c.mu.Unlock()
		return nil
	}
	if !c.armed || c.seen[key] || len(c.crashes) >= c.limit {
		c.mu.Unlock()
		return nil
	}
	c.seen[key] = true
	c.crashes = append(c.crashes, key)
	c.mu.Unlock()
	select {
	case c.ch <- key:
	case <-ctx.Done():
		return ctx.Err()
	}
	// Dead: block until the test stops this operator.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Minute):
		return fmt.Errorf("crash at %s: the operator was not stopped", key)
	}
}

// skip passes the crash points of steps at the next two epochs from
// epoch on (each once), as if crashed at already.
func (c *crasher) skip(epoch int64, steps ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range steps {
		for e := epoch; e <= epoch+1; e++ {
			c.seen[fmt.Sprintf("%s@%d", s, e)] = true
		}
	}
}

func (c *crasher) arm(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed = on
}

// steps are the distinct step names crashed at, from the from-th crash on.
func (c *crasher) steps(from int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, k := range c.crashes[from:] {
		step, _, _ := strings.Cut(k, "@")
		if !slices.Contains(out, step) {
			out = append(out, step)
		}
	}
	sort.Strings(out)
	return out
}

func (c *crasher) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.crashes)
}

// runUntil restarts the operator at every crash until done holds.
func (c *crasher) runUntil(what string, within time.Duration, done func(Gomega) bool) {
	deadline := time.Now().Add(within)
	for {
		select {
		case key := <-c.ch:
			fmt.Fprintf(GinkgoWriter, "%s: operator crashed at %s: restarting it\n", what, key)
			stopManager()
			startManager()
			continue
		case <-time.After(200 * time.Millisecond):
		}
		g := NewGomega(func(string, ...int) {})
		ok := func() (ok bool) {
			defer func() {
				if recover() != nil {
					ok = false
				}
			}()
			return done(g)
		}()
		if ok {
			return
		}
		Expect(time.Now().Before(deadline)).To(BeTrue(), "%s did not complete within %s (crashed at %v)", what, within, c.steps(0))
	}
}

// history watches the MeshCluster and keeps, per shard, the owners it had
// in order, and checks the recorded epoch never goes back.
type history struct {
	mu     sync.Mutex
	owners map[int32][]string
	epoch  int64
	bad    []string
}

func watchHistory(name string) *history {
	h := &history{owners: map[int32][]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		for ctx.Err() == nil {
			w, err := k8sClient.Watch(ctx, &meshv1.MeshClusterList{}, client.InNamespace("default"), client.MatchingFields{"metadata.name": name})
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			for ev := range w.ResultChan() {
				if mc, ok := ev.Object.(*meshv1.MeshCluster); ok && ev.Type != watch.Deleted {
					h.observe(mc)
				}
			}
			w.Stop()
		}
	}()
	DeferCleanup(func() { cancel(); <-done })
	return h
}

func (h *history) observe(mc *meshv1.MeshCluster) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if mc.Status.Epoch < h.epoch {
		h.bad = append(h.bad, fmt.Sprintf("recorded epoch went back from %d to %d", h.epoch, mc.Status.Epoch))
	}
	h.epoch = max(h.epoch, mc.Status.Epoch)
	for _, s := range mc.Status.Shards {
		o := h.owners[s.ID]
		if len(o) == 0 || o[len(o)-1] != s.Owner {
			h.owners[s.ID] = append(o, s.Owner)
		}
	}
}

// ownersSince returns each shard's owners from the mark on.
func (h *history) mark() map[int32]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := map[int32]int{}
	for id, o := range h.owners {
		m[id] = len(o) - 1
	}
	return m
}

func (h *history) ownersSince(mark map[int32]int) map[int32][]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[int32][]string{}
	for id, o := range h.owners {
		out[id] = slices.Clone(o[mark[id]:])
	}
	return out
}

func (h *history) problems() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.bad)
}

// nodeWatch reads every running node's admin status over and over and
// checks what the nodes themselves say: each node's epoch never goes back,
// and no node claims a shard writable (owner, unfenced, lease running) at
// an epoch older than one at which another node was already seen claiming
// it writable (a response received before this request was sent), which
// is what two owners accepting writes would look like.
type nodeWatch struct {
	mu       sync.Mutex
	epochs   map[string]uint64 // per node process (address)
	writable map[uint16][]claim
	bad      []string
	rounds   int
}

type claim struct {
	node     string
	epoch    uint64
	received time.Time
}

// adminDialer signs admin calls to cluster's nodes with the operator's
// key, as the operator does.
func adminDialer(g Gomega, cluster string) adminclient.Dialer {
	secret := &corev1.Secret{}
	g.Expect(k8sClient.Get(context.Background(), key(resources.OperatorKeySecretName(clusterOf(cluster))), secret)).To(Succeed())
	kp, err := identity.KeyPairFromSecretData(secret.Data)
	g.Expect(err).NotTo(HaveOccurred())
	return adminclient.NewHTTPDialer(kp, &http.Client{Timeout: time.Second})
}

// nodeStatus reads one node's admin status.
func nodeStatus(g Gomega, cluster, addr string) adminapi.Status {
	st, err := adminDialer(g, cluster)(addr).Status(context.Background())
	g.Expect(err).NotTo(HaveOccurred())
	return st
}

func watchNodes(kubelet *testKubelet, cluster string) *nodeWatch {
	dial := adminDialer(Default, cluster)
	nw := &nodeWatch{epochs: map[string]uint64{}, writable: map[uint16][]claim{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		for ctx.Err() == nil {
			var wg sync.WaitGroup
			for name, addr := range kubelet.adminAddrs() {
				wg.Go(func() {
					sent := time.Now()
					// Past any partition the test made.
					st, err := dial(behindGate(addr)).Status(ctx)
					if err == nil {
						nw.observe(name, addr, sent, time.Now(), st)
					}
				})
			}
			wg.Wait()
			nw.mu.Lock()
			nw.rounds++
			nw.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	DeferCleanup(func() { cancel(); <-done })
	return nw
}

func (nw *nodeWatch) observe(name, addr string, sent, received time.Time, st adminapi.Status) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if st.Epoch < nw.epochs[addr] {
		nw.bad = append(nw.bad, fmt.Sprintf("%s (%s) went back from epoch %d to %d", name, addr, nw.epochs[addr], st.Epoch))
	}
	nw.epochs[addr] = max(nw.epochs[addr], st.Epoch)
	if st.LeaseRemainingMillis <= 0 {
		return
	}
	for _, s := range st.Shards {
		if s.Role != "owner" || s.Fenced {
			continue
		}
		for _, c := range nw.writable[s.ID] {
			if c.node != name && c.epoch > st.Epoch && c.received.Before(sent) {
				nw.bad = append(nw.bad, fmt.Sprintf("shard %d: %s writable at epoch %d after %s was seen writable at epoch %d", s.ID, name, st.Epoch, c.node, c.epoch))
			}
		}
		if cs := nw.writable[s.ID]; len(cs) == 0 || cs[len(cs)-1].node != name || cs[len(cs)-1].epoch != st.Epoch {
			nw.writable[s.ID] = append(cs, claim{node: name, epoch: st.Epoch, received: received})
		}
	}
}

func (nw *nodeWatch) problems() ([]string, int) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return slices.Clone(nw.bad), nw.rounds
}

// adminAddrs are the admin API addresses of the running nodes, by pod.
func (k *testKubelet) adminAddrs() map[string]string {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[string]string{}
	for name, rp := range k.pods {
		if !rp.dead {
			out[name] = net.JoinHostPort(rp.ip, fmt.Sprint(nodeconfig.AdminPort))
		}
	}
	return out
}

// countedLoad ingests through the SDK with a send-counting transport, so
// the read-back can hold each acknowledged event to exactly once: an event
// sent once must be stored once, one the SDK resent at most once per send.
type countedLoad struct {
	*ingestLoad
	sends   *clienttest.SendCounter
	sdk     *meshclient.Client
	cluster string
}

func startCountedIngest(kubelet *testKubelet) *countedLoad {
	sends := clienttest.NewSendCounter()
	sdk, err := meshclient.New(context.Background(), meshclient.Options{
		Addresses: kubelet.dataAddrs(), RetryMax: 200 * time.Millisecond, Credentials: dataCredentials(kubelet.cluster),
		HTTPClient: &http.Client{Timeout: 5 * time.Second, Transport: sends},
	})
	Expect(err).NotTo(HaveOccurred())
	return &countedLoad{ingestLoad: startIngest(sdk), sends: sends, sdk: sdk, cluster: kubelet.cluster}
}

// expectExactlyOnce stops the load, reads the whole cluster back and
// checks every acknowledged event is there exactly once (at most once per
// send when the SDK had to resend it), with seqs growing per shard.
func (l *countedLoad) expectExactlyOnce(addrs []string) {
	l.stop()
	ctx := context.Background()
	sdk, err := meshclient.New(ctx, meshclient.Options{Addresses: addrs, Credentials: dataCredentials(l.cluster)})
	Expect(err).NotTo(HaveOccurred())
	poller, err := sdk.NewPoller("")
	Expect(err).NotTo(HaveOccurred())
	copies := map[string]int{}
	lastSeq := map[uint16]uint64{}
	Eventually(func(g Gomega) int {
		page, err := poller.Poll(ctx, 500)
		g.Expect(err).NotTo(HaveOccurred())
		for _, e := range page.Events {
			prev, ok := lastSeq[e.Shard]
			g.Expect(!ok || e.Seq > prev).To(BeTrue(), "shard %d: seq %d after %d", e.Shard, e.Seq, prev)
			lastSeq[e.Shard] = e.Seq
			copies[string(e.Payload)]++
		}
		missing := 0
		for p := range l.acked {
			if copies[p] == 0 {
				missing++
			}
		}
		return missing
	}, 30*time.Second, 20*time.Millisecond).Should(BeZero(), "acknowledged events not read back")
	resent := 0
	for p := range l.acked {
		sends := l.sends.Sends(p)
		if sends > 1 {
			resent++
		}
		Expect(copies[p]).To(BeNumerically("<=", max(sends, 1)), "%s stored %d times, sent %d times", p, copies[p], sends)
	}
	fmt.Fprintf(GinkgoWriter, "read back all %d acknowledged events exactly once (%d resent by the SDK, %d ingest calls failed)\n", len(l.acked), resent, l.failed)
}

var _ = Describe("Operator restarts at every failpoint", func() {
	It("completes a failover and then a scale-down exactly once, restarted at every step, with never two owners", func() {
		const name = "crash"
		gateClusterWire(name)
		kubelet, _ := startCluster(name, func(mc *meshv1.MeshCluster) {
			mc.Spec.Nodes = 2
			mc.Spec.Shards.Count = 4
			mc.Spec.Standby.AckPolicy = meshv1.AckStandby
			mc.Spec.Standby.FailoverAfter = metav1.Duration{Duration: time.Second}
			// Longer than failoverAfter plus an operator restart, so a
			// restarted operator that promoted without waiting out the lease
			// would leave the old owner writable next to the new one.
			mc.Spec.Standby.LeaseDuration = metav1.Duration{Duration: 5 * time.Second}
		})
		hist := watchHistory(name)
		nodes := watchNodes(kubelet, name)
		load := startLoad(kubelet)
		crash := armCrasher(name, 80)

		// failover fails victim (fail), restarts the operator at every
		// crash point until promoted owns victim's shards, then brings
		// victim back and waits until every shard is followed by it alone
		// (the live followers the failover added dropped). skip are crash
		// points (by step) passed this time, so a second failover reaches
		// the points a crash before them made unnecessary.
		failover := func(victim, promoted string, fail func(string), skip ...string) {
			got := getCluster(Default, name)
			var shards []int32
			for _, s := range got.Status.Shards {
				if s.Owner == victim {
					shards = append(shards, s.ID)
				}
			}
			Expect(shards).NotTo(BeEmpty())
			crash.skip(got.Status.Epoch, skip...)
			mark, n0, start := hist.mark(), crash.count(), time.Now()
			crash.arm(true)
			fail(victim)
			crash.runUntil("failover of "+victim, 3*time.Minute, func(g Gomega) bool {
				got := getCluster(g, name)
				return len(got.Status.Migrations) == 0 && !slices.ContainsFunc(got.Status.Shards, func(s meshv1.ShardStatus) bool { return s.Owner == victim }) &&
					slices.ContainsFunc(got.Status.Members, func(m meshv1.MemberStatus) bool { return m.Name == victim && m.Role == meshv1.RoleStandby })
			})
			fmt.Fprintf(GinkgoWriter, "failover of %s done after %d crashes at %v in %s\n", victim, crash.count()-n0, crash.steps(n0), time.Since(start).Round(time.Millisecond))
			for id, owners := range hist.ownersSince(mark) {
				if slices.Contains(shards, id) {
					Expect(owners).To(Equal([]string{victim, promoted}), "shard %d: one promotion", id)
				} else {
					Expect(owners).To(HaveLen(1), "shard %d keeps its owner", id)
				}
			}

			By("bringing " + victim + " back as a standby; the live followers the failover added are dropped once it caught up")
			kubelet.revive(victim)
			crash.runUntil("rejoin of "+victim, 2*time.Minute, func(g Gomega) bool {
				got := getCluster(g, name)
				for _, s := range got.Status.Shards {
					if !slices.Equal(s.Followers, []string{victim}) {
						return false
					}
				}
				return meta.IsStatusConditionTrue(got.Status.Conditions, meshv1.ConditionAvailable)
			})
			crash.arm(false)
		}

		By("failing over crash-0's shards to the standby (its node killed), the operator crashing at every step")
		failover("crash-0", "crash-2", kubelet.kill)
		// crash-1 keeps running and serving its clients, cut off from the
		// operator only, until its lease runs out: a restarted operator
		// that promoted before that would show two writable owners on the
		// nodes.
		By("failing over crash-1's shards to crash-0 (its admin API cut off from the operator, its node serving), passing the promotion's record this time")
		failover("crash-1", "crash-0", func(pod string) { adminGateOf(pod).pause() }, "recorded")
		Expect(crash.steps(0)).To(ContainElements("promote-lease-waited", "recorded", "promote-pushed"))

		By("scaling down to 1 active: crash-2 (active since the first failover) leaves, the operator crashing at every step")
		mark := hist.mark()
		n0 := crash.count()
		start := time.Now()
		moved := getCluster(Default, name)
		var leaving []int32
		for _, s := range moved.Status.Shards {
			if s.Owner == "crash-2" {
				leaving = append(leaving, s.ID)
			}
		}
		Expect(leaving).NotTo(BeEmpty())
		crash.arm(true)
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Nodes = 1 })
		crash.runUntil("scale-down", 4*time.Minute, func(g Gomega) bool {
			got := getCluster(g, name)
			var names []string
			for _, m := range got.Status.Members {
				names = append(names, fmt.Sprintf("%s:%s", m.Name, m.Role))
			}
			slices.Sort(names)
			return *getSTS(name)(g).Spec.Replicas == 2 && slices.Equal(names, []string{"crash-0:active", "crash-1:standby"}) && len(got.Status.Migrations) == 0
		})
		crash.arm(false)
		fmt.Fprintf(GinkgoWriter, "scale-down done after %d crashes at %v in %s\n", crash.count()-n0, crash.steps(n0), time.Since(start).Round(time.Millisecond))
		Expect(crash.steps(n0)).To(ContainElements("recorded", "handoff-follow-pushed", "handoff-caught-up", "handoff-fence-pushed",
			"handoff-fenced", "handoff-cutover-pushed", "drain-annotated", "drain-drained"))
		for id, owners := range hist.ownersSince(mark) {
			if slices.Contains(leaving, id) {
				Expect(owners).To(Equal([]string{"crash-2", "crash-0"}), "shard %d: one cutover", id)
			} else {
				Expect(owners).To(Equal([]string{"crash-0"}), "shard %d keeps its owner", id)
			}
		}
		Expect(crash.steps(0)).To(ContainElement("pushed"))
		got := getCluster(Default, name)
		for _, s := range got.Status.Shards {
			Expect(s.Owner).To(Equal("crash-0"))
			Expect(s.Fenced).To(BeFalse())
		}
		Eventually(func(g Gomega) []string { return eventReasons(g, name, corev1.EventTypeNormal) }, timeout, interval).Should(ContainElement("ScaledDown"))

		By("checking what the nodes say: one writable owner per shard, epochs monotonic")
		Eventually(func(g Gomega) {
			addrs := kubelet.adminAddrs()
			g.Expect(addrs).To(HaveLen(2))
		}, timeout, interval).Should(Succeed())
		problems, rounds := nodes.problems()
		Expect(problems).To(BeEmpty())
		Expect(hist.problems()).To(BeEmpty())
		Expect(rounds).To(BeNumerically(">", 100), "the nodes were watched throughout")

		By("reading back every acknowledged event exactly once")
		load.expectExactlyOnce(kubelet.dataAddrs())
	})
})

var _ = Describe("Operator restarts during concurrent moves", func() {
	It("resumes every move of a concurrent batch from status, each shard cut over once", func() {
		const name = "batch"
		kubelet, before := startCluster(name, concurrentMoves)
		hist := watchHistory(name)
		nodes := watchNodes(kubelet, name)
		load := startLoad(kubelet)

		By("adding a third active (two shards move at once), the operator crashing at each step of the batch")
		crash := armCrasher(name, 30)
		mark := hist.mark()
		crash.arm(true)
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Nodes = 3 })
		crash.runUntil("concurrent moves", 3*time.Minute, func(g Gomega) bool {
			got := getCluster(g, name)
			counts := ownedCounts(got)
			if len(counts) != 3 || len(got.Status.Migrations) != 0 {
				return false
			}
			for _, c := range counts {
				if c < 2 || c > 3 {
					return false
				}
			}
			return true
		})
		crash.arm(false)
		fmt.Fprintf(GinkgoWriter, "concurrent moves done after %d crashes at %v\n", crash.count(), crash.steps(0))
		Expect(crash.steps(0)).To(ContainElements("handoff-follow-pushed", "handoff-fenced", "handoff-cutover-pushed"))
		moved := 0
		for id, owners := range hist.ownersSince(mark) {
			Expect(len(owners)).To(BeNumerically("<=", 2), "shard %d: owners %v (one cutover at most)", id, owners)
			if len(owners) == 2 {
				moved++
				Expect(owners[0]).To(Equal(before.Status.Shards[id].Owner))
			}
		}
		Expect(moved).To(Equal(2))
		problems, _ := nodes.problems()
		Expect(problems).To(BeEmpty())
		Expect(hist.problems()).To(BeEmpty())

		By("reading back every acknowledged event exactly once")
		load.expectExactlyOnce(kubelet.dataAddrs())
	})
})

var _ = Describe("A restarted operator", func() {
	It("does not hand ownership to an owner that came back empty while no operator ran (memory mode), and fails it over at once", func() {
		const name = "amnesia"
		kubelet, _ := startCluster(name, func(mc *meshv1.MeshCluster) {
			mc.Spec.Nodes = 2
			mc.Spec.Shards.Count = 4
			mc.Spec.Standby.AckPolicy = meshv1.AckStandby
			// Only the restart detection can fail it over in this spec.
			mc.Spec.Standby.FailoverAfter = metav1.Duration{Duration: time.Hour}
		})
		load := startLoad(kubelet)

		By("stopping the operator, then replacing amnesia-0's pod by a fresh one (new address, empty log)")
		startOperator := stopOperator()
		oldIP := kubelet.ip(name + "-0")
		kubelet.revive(name + "-0")
		var fresh string
		Eventually(func() string {
			fresh = kubelet.ip(name + "-0")
			return fresh
		}, timeout, interval).ShouldNot(Or(BeEmpty(), Equal(oldIP)))
		dial := adminDialer(Default, name)
		freshAddr := net.JoinHostPort(fresh, fmt.Sprint(nodeconfig.AdminPort))
		owned, stopWatch := watchOwned(dial, freshAddr, "the fresh node")

		By("starting a fresh operator: it withholds ownership from amnesia-0 and promotes its followers")
		startOperator()
		expectFailedOver(name, owned, stopWatch)
		n := load.count()
		Eventually(load.count, 10*time.Second).Should(BeNumerically(">", n+100))

		By("reading back every acknowledged event exactly once")
		load.expectExactlyOnce(kubelet.dataAddrs())
	})
})
