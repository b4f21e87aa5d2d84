package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/client"
	"github.com/purplerain/mesh-operator/client/clienttest"
	"github.com/purplerain/mesh-operator/controllers/resources"
	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/compute/daemons"
	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node"
	"github.com/purplerain/mesh-operator/node/adminclient"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/topology"
)

// load writes unique payloads through the SDK from a few goroutines (even
// ones keyed, odd ones keyless) and remembers what was acknowledged, on
// which shard, and in which order per writer (a writer sends its next
// event only after the previous one was acknowledged).
type load struct {
	cl *client.Client

	mu    sync.Mutex
	acked map[string]uint16
	order map[string][]string
	errs  []error

	seq  atomic.Int64
	stop context.CancelFunc
	wg   sync.WaitGroup
}

func newLoad(cl *client.Client) *load {
	return &load{cl: cl, acked: map[string]uint16{}, order: map[string][]string{}}
}

// payload is an event's unique id; the counter daemon reads key and amount.
func (l *load) payload(writer string) []byte {
	n := l.seq.Add(1)
	return []byte(fmt.Sprintf(`{"id":"%s-%d","key":"k%d","amount":%d,"ts":%d}`, writer, n, n%5, n%7, n*10_000_000))
}

func (l *load) record(writer string, payload []byte, acks []dataapi.Ack, err error, ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		l.acked[string(payload)] = acks[0].Shard
		l.order[writer] = append(l.order[writer], string(payload))
	case ctx.Err() == nil:
		l.errs = append(l.errs, err)
	}
}

// start runs workers writers named after prefix until halt.
func (l *load) start(prefix string, workers int) {
	ctx, cancel := context.WithCancel(context.Background())
	l.stop = cancel
	for w := range workers {
		writer := fmt.Sprintf("%s%d", prefix, w)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				ev := client.Event{Payload: l.payload(writer)}
				if w%2 == 0 {
					ev.Key = []byte(fmt.Sprintf("key-%d", l.seq.Load()%17))
				}
				acks, err := l.cl.Ingest(ctx, ev)
				l.record(writer, ev.Payload, acks, err, ctx)
			}
		}()
	}
}

func (l *load) halt() {
	if l.stop != nil {
		l.stop()
	}
	l.wg.Wait()
}

func (l *load) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// keyOf returns a key that routes to shard id of a cluster of n shards.
func keyOf(id uint16, n int) []byte {
	for k := 0; ; k++ {
		key := []byte("probe-" + strconv.Itoa(k))
		if topology.KeyShard(key, n) == id {
			return key
		}
	}
}

// dataAddrs are the data API addresses of the cluster's ready pods.
func dataAddrs(ns, name string) []string {
	GinkgoHelper()
	var out []string
	for _, p := range clusterPods(ns, name) {
		if p.Status.PodIP != "" && podReady(&p) {
			out = append(out, net.JoinHostPort(p.Status.PodIP, strconv.Itoa(nodeconfig.DataPort)))
		}
	}
	Expect(out).NotTo(BeEmpty())
	return out
}

// eventReasons lists the reasons of the Events of type typ about the
// MeshCluster name.
func eventReasons(g Gomega, ns, name, typ string) []string {
	evs, err := clientset.EventsV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	var out []string
	for _, e := range evs.Items {
		if e.Regarding.Kind == "MeshCluster" && e.Regarding.Name == name && e.Type == typ {
			out = append(out, e.Reason)
		}
	}
	return out
}

// verifyReads polls everything from the beginning and checks every
// acknowledged event: stored on the shard it was acknowledged for, once
// when it was sent once (at most once per send when the SDK resent it),
// and after every event its writer had acknowledged earlier on the same
// shard. It then checks the declared daemons on every shard's owner
// against a reference fold of the shard as read back.
func verifyReads(ctx context.Context, ns, name string, cl *client.Client, l *load, sent *clienttest.SendCounter) {
	GinkgoHelper()
	Expect(cl.Refresh(ctx)).To(Succeed())
	p, err := cl.NewPoller("")
	Expect(err).NotTo(HaveOccurred())
	type where struct {
		shards []uint16
		seqs   []uint64
	}
	seen := map[string]*where{}
	last := map[uint16]uint64{}
	started := map[uint16]bool{}
	byShard := map[uint16][]compute.Event{}
	total := 0
	for {
		var page client.Page
		// A page may meet a member that just moved: retry the page.
		Eventually(func(g Gomega) {
			page, err = p.Poll(ctx, 2000)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(page.StalledShards).To(BeEmpty())
		}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
		for _, e := range page.Events {
			Expect(started[e.Shard] && e.Seq <= last[e.Shard]).To(BeFalse(), "shard %d: seq %d after %d in poll order", e.Shard, e.Seq, last[e.Shard])
			started[e.Shard], last[e.Shard] = true, e.Seq
			w := seen[string(e.Payload)]
			if w == nil {
				w = &where{}
				seen[string(e.Payload)] = w
			}
			w.shards = append(w.shards, e.Shard)
			w.seqs = append(w.seqs, e.Seq)
			total++
			byShard[e.Shard] = append(byShard[e.Shard], compute.Event{Seq: e.Seq, Time: e.Time, Payload: e.Payload})
		}
		if !page.HasMore && len(page.Events) == 0 {
			break
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	Expect(l.errs).To(BeEmpty(), "ingest errors")
	Expect(l.acked).NotTo(BeEmpty())
	resent := 0
	for id, shard := range l.acked {
		w, n := seen[id], sent.Sends(id)
		Expect(w).NotTo(BeNil(), "acknowledged event %s (shard %d) missing", id, shard)
		Expect(w.shards).To(ContainElement(shard), "event %s acknowledged for shard %d", id, shard)
		Expect(len(w.shards)).To(BeNumerically("<=", n), "event %s stored more often than sent", id)
		if len(w.shards) > 1 {
			resent++
		}
	}
	for writer, ids := range l.order {
		after := map[uint16]uint64{}
		for _, id := range ids {
			shard, loc := l.acked[id], seen[id]
			lo, hi := ^uint64(0), uint64(0)
			for i, s := range loc.shards {
				if s == shard {
					lo, hi = min(lo, loc.seqs[i]), max(hi, loc.seqs[i])
				}
			}
			if prev, ok := after[shard]; ok {
				Expect(lo).To(BeNumerically(">", prev), "writer %s: %s stored at or before an event it acknowledged earlier on shard %d", writer, id, shard)
			}
			after[shard] = hi
		}
	}
	fmt.Fprintf(GinkgoWriter, "verified: %d acknowledged events, %d stored on %d shards, %d stored twice after an SDK resend\n", len(l.acked), total, len(started), resent)
	checkDaemons(ctx, ns, name, byShard)
}

// checkDaemons checks that every declared daemon on each shard's owner
// (as recorded in status) equals a fresh reference fold of the shard's
// events as read back, once it folded them.
func checkDaemons(ctx context.Context, ns, name string, byShard map[uint16][]compute.Event) {
	GinkgoHelper()
	mc := getMC(ns, name)
	var secret corev1.Secret
	Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: resources.OperatorKeySecretName(mc)}, &secret)).To(Succeed())
	key, err := identity.KeyPairFromSecretData(secret.Data)
	Expect(err).NotTo(HaveOccurred())
	dial := adminclient.NewHTTPDialer(key, nil)
	addr := map[string]string{}
	for _, m := range mc.Status.Members {
		addr[m.Name] = net.JoinHostPort(m.Address, strconv.Itoa(nodeconfig.AdminPort))
	}
	Expect(mc.Spec.Daemons).NotTo(BeEmpty())
	checked := 0
	for _, s := range mc.Status.Shards {
		id := uint16(s.ID)
		evs := byShard[id]
		for i, e := range evs {
			Expect(e.Seq).To(Equal(uint64(i)), "shard %d: the reference fold needs the log from 0", id)
		}
		for _, d := range mc.Spec.Daemons {
			var cfg []byte
			if len(d.Config) > 0 {
				cfg, _ = json.Marshal(d.Config)
			}
			kind := string(d.Kind)
			dm, err := daemons.Builtins().New(kind, d.Name, cfg)
			Expect(err).NotTo(HaveOccurred())
			ref := compute.NewHost(d.Name, kind, cfg, dm, compute.CursorAt(0), compute.HostConfig{})
			for _, e := range evs {
				_, err := ref.Deliver(e)
				Expect(err).NotTo(HaveOccurred())
			}
			snap, err := ref.Snapshot()
			Expect(err).NotTo(HaveOccurred())
			view, err := daemons.StateView(kind, cfg, snap.State)
			Expect(err).NotTo(HaveOccurred())
			want, _ := json.Marshal(view)
			admin := dial(addr[s.Owner]).(*adminclient.HTTP)
			Eventually(func(g Gomega) {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				got, err := admin.Daemons(cctx)
				g.Expect(err).NotTo(HaveOccurred())
				i := slices.IndexFunc(got.Daemons, func(x node.DaemonStatus) bool { return x.Name == d.Name && x.Shard == id })
				g.Expect(i).To(BeNumerically(">=", 0), "owner %s of shard %d hosts daemon %s", s.Owner, id, d.Name)
				ds := got.Daemons[i]
				var state bytes.Buffer
				_ = json.Compact(&state, ds.State)
				g.Expect(ds.Role).To(Equal("owner"))
				g.Expect(ds.Next).To(Equal(snap.Cursor.Next()), "shard %d daemon %s on %s", id, d.Name, s.Owner)
				g.Expect(state.String()).To(Equal(string(want)), "shard %d daemon %s on %s", id, d.Name, s.Owner)
			}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
			checked++
		}
	}
	fmt.Fprintf(GinkgoWriter, "verified: %d daemon instances on the shards' owners equal a reference fold\n", checked)
}

// ownedCounts is how many shards each owner holds in the recorded status.
func ownedCounts(mc *meshv1.MeshCluster) map[string]int {
	out := map[string]int{}
	for _, s := range mc.Status.Shards {
		out[s.Owner]++
	}
	return out
}

// settled: Available for the current generation, nothing in flight.
func settled(g Gomega, mc *meshv1.MeshCluster) {
	g.Expect(mc.Status.ObservedGeneration).To(Equal(mc.Generation))
	g.Expect(meta.IsStatusConditionTrue(mc.Status.Conditions, meshv1.ConditionAvailable)).To(BeTrue(), "%v", mc.Status.Conditions)
	g.Expect(meta.IsStatusConditionFalse(mc.Status.Conditions, meshv1.ConditionProgressing)).To(BeTrue(), "%v", mc.Status.Conditions)
	g.Expect(mc.Status.Migrations).To(BeEmpty())
	for _, s := range mc.Status.Shards {
		g.Expect(s.Fenced).To(BeFalse())
	}
}

var _ = Describe("Data-plane scenarios", Ordered, func() {
	var (
		ns   string
		cl   *client.Client
		l    *load
		sent = clienttest.NewSendCounter()
	)
	const name = "demo"

	BeforeAll(func(ctx SpecContext) {
		ns = newNamespace("e2e-data")
		applySample("mesh_v1alpha1_meshcluster.yaml", ns)
		waitAvailable(ctx, ns, name, 2*time.Minute)
		hc := &http.Client{Timeout: 10 * time.Second, Transport: sent}
		// The nodes require data tokens: authenticate with the credentials
		// the operator published in the cluster's data-key Secret.
		var secret corev1.Secret
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: resources.DataKeySecretName(getMC(ns, name))}, &secret)).To(Succeed())
		creds, err := identity.DataCredentialsFromSecretData(secret.Data)
		Expect(err).NotTo(HaveOccurred())
		cl, err = client.New(ctx, client.Options{Addresses: dataAddrs(ns, name), HTTPClient: hc, RetryBase: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond, Credentials: creds})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { _ = cl.Close() })
		l = newLoad(cl)
	})

	// awaitLoad waits until at least n more events were acknowledged.
	awaitLoad := func(ctx context.Context, n int, why string) {
		GinkgoHelper()
		before := l.count()
		Eventually(l.count).WithContext(ctx).WithTimeout(time.Minute).WithPolling(50*time.Millisecond).Should(BeNumerically(">=", before+n), why)
	}

	It("(b) keeps every acknowledged event while scaling 3→5→2 with kubectl scale under ingest", func(ctx SpecContext) {
		l.start("scale-", 4)
		DeferCleanup(l.halt)
		awaitLoad(ctx, 100, "ingest runs before the scale-up")

		By("kubectl scale --replicas=5: shards move to the new actives")
		start := time.Now()
		kubectl("scale", "-n", ns, "meshcluster/"+name, "--replicas=5")
		Eventually(func(g Gomega) {
			mc := &meshv1.MeshCluster{}
			g.Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, mc)).To(Succeed())
			settled(g, mc)
			g.Expect(mc.Status.Nodes).To(Equal(int32(5)))
			counts := ownedCounts(mc)
			g.Expect(counts).To(HaveLen(5), "every active owns shards: %v", counts)
			lo, hi := 1<<30, 0
			for _, n := range counts {
				lo, hi = min(lo, n), max(hi, n)
			}
			g.Expect(hi-lo).To(BeNumerically("<=", 1), "%v", counts)
		}).WithContext(ctx).WithTimeout(2 * time.Minute).WithPolling(200 * time.Millisecond).Should(Succeed())
		record("kubectl scale 3→5 to balanced under ingest", time.Since(start))
		Eventually(func(g Gomega) []string { return eventReasons(g, ns, name, corev1.EventTypeNormal) }).
			WithContext(ctx).WithTimeout(30 * time.Second).Should(ContainElement("ShardMoved"))
		awaitLoad(ctx, 100, "ingest goes on after the moves")

		By("kubectl scale --replicas=2: leaving nodes are emptied before the StatefulSet shrinks")
		start = time.Now()
		kubectl("scale", "-n", ns, "meshcluster/"+name, "--replicas=2")
		Eventually(func(g Gomega) {
			mc := &meshv1.MeshCluster{}
			g.Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, mc)).To(Succeed())
			settled(g, mc)
			g.Expect(mc.Status.Nodes).To(Equal(int32(2)))
			g.Expect(meta.IsStatusConditionFalse(mc.Status.Conditions, meshv1.ConditionScaleDownBlocked)).To(BeTrue())
			var members []string
			for _, m := range mc.Status.Members {
				members = append(members, m.Name+":"+string(m.Role))
			}
			g.Expect(members).To(ConsistOf(name+"-0:active", name+"-1:active", name+"-2:standby"))
			g.Expect(ownedCounts(mc)).To(Equal(map[string]int{name + "-0": 4, name + "-1": 4}))
			g.Expect(clusterPods(ns, name)).To(HaveLen(3))
		}).WithContext(ctx).WithTimeout(2 * time.Minute).WithPolling(200 * time.Millisecond).Should(Succeed())
		record("kubectl scale 5→2 (scale-down duration) under ingest", time.Since(start))
		Eventually(func(g Gomega) []string { return eventReasons(g, ns, name, corev1.EventTypeNormal) }).
			WithContext(ctx).WithTimeout(30 * time.Second).Should(ContainElements("Drained", "MembersLeft", "ScaledDown"))
		awaitLoad(ctx, 100, "ingest goes on after the scale-down")

		l.halt()
		verifyReads(ctx, ns, name, cl, l, sent)
	})

	// failover kills the owner of shard 0 (SIGKILL of its process, or a
	// pod delete), measures until a write keyed to that shard is
	// acknowledged again, and checks the promotion.
	failover := func(ctx context.Context, how string, graceful bool, kill func(p *corev1.Pod)) {
		GinkgoHelper()
		l.start(how+"-", 4)
		DeferCleanup(l.halt)
		awaitLoad(ctx, 100, "ingest runs before the kill")

		mc := getMC(ns, name)
		var victim string
		for _, s := range mc.Status.Shards {
			if s.ID == 0 {
				victim = s.Owner
			}
		}
		Expect(victim).NotTo(BeEmpty())
		pod := &corev1.Pod{}
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: victim}, pod)).To(Succeed())
		epoch := mc.Status.Epoch
		countOf := func(reasons []string, reason string) int {
			n := 0
			for _, r := range reasons {
				if r == reason {
					n++
				}
			}
			return n
		}
		promotedBefore := countOf(eventReasons(Default, ns, name, corev1.EventTypeNormal), "Promoted")
		key := keyOf(0, int(mc.Status.ShardCount))

		start := time.Now()
		kill(pod)
		if graceful {
			// A deleted pod's node keeps serving during its grace period,
			// so a write right after the delete proves nothing: wait until
			// shard 0 is recorded with another owner first.
			Eventually(func(g Gomega) string {
				got := &meshv1.MeshCluster{}
				g.Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, got)).To(Succeed())
				for _, s := range got.Status.Shards {
					if s.ID == 0 {
						return s.Owner
					}
				}
				return ""
			}).WithContext(ctx).WithTimeout(90 * time.Second).WithPolling(20 * time.Millisecond).ShouldNot(Or(Equal(victim), BeEmpty()))
		}
		// One write to shard 0, retried by the SDK until the shard has a
		// writable owner again.
		probe := how + "-probe"
		payload := l.payload(probe)
		pctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		acks, err := cl.Ingest(pctx, client.Event{Key: key, Payload: payload})
		cancel()
		l.record(probe, payload, acks, err, ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(acks[0].Shard).To(Equal(uint16(0)))
		what := "failover (SIGKILL of the owner) to shard writable (target < 5 s)"
		if graceful {
			what = "failover (pod delete of the owner) to shard recorded with a new owner and writable"
		}
		record(what, time.Since(start))

		Eventually(func(g Gomega) {
			got := &meshv1.MeshCluster{}
			g.Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, got)).To(Succeed())
			settled(g, got)
			g.Expect(got.Status.Epoch).To(BeNumerically(">", epoch))
			g.Expect(got.Status.ReadyNodes).To(Equal(int32(3)))
			for _, s := range got.Status.Shards {
				g.Expect(s.Owner).NotTo(Equal(victim), "shard %d: %s was failed over", s.ID, victim)
			}
			for _, m := range got.Status.Members {
				if m.Name == victim {
					g.Expect(m.Role).To(Equal(meshv1.RoleStandby), "%s rejoins as the standby", victim)
				}
			}
		}).WithContext(ctx).WithTimeout(2 * time.Minute).WithPolling(200 * time.Millisecond).Should(Succeed())
		Eventually(func(g Gomega) int { return countOf(eventReasons(g, ns, name, corev1.EventTypeNormal), "Promoted") }).
			WithContext(ctx).WithTimeout(30*time.Second).Should(BeNumerically(">", promotedBefore), "a Promoted Event tells of this failover")
		awaitLoad(ctx, 100, "ingest goes on after the failover")

		l.halt()
		verifyReads(ctx, ns, name, cl, l, sent)
	}

	It("(c) promotes the standby after an active's process is SIGKILLed", func(ctx SpecContext) {
		failover(ctx, "SIGKILL", false, func(p *corev1.Pod) {
			Expect(syscall.Kill(pidOf(p), syscall.SIGKILL)).To(Succeed())
		})
	})

	It("(c) promotes the standby after an active's pod is deleted", func(ctx SpecContext) {
		failover(ctx, "pod-delete", true, func(p *corev1.Pod) {
			Expect(k8s.Delete(context.Background(), p)).To(Succeed())
		})
	})

	// roll changes the pod template with a merge patch of the MeshCluster
	// under SDK ingest and checks the operator-driven rolling update: every
	// pod replaced exactly once, the standby first, one pod at a time, no
	// pod deleted while its member owned shards (each active handed them
	// off first), no failover, every pod at the StatefulSet's new update
	// revision, the cluster settled and balanced, the story told by
	// Events, and nothing acknowledged lost.
	roll := func(ctx context.Context, what, patch string) {
		GinkgoHelper()
		l.start("roll-"+what+"-", 4)
		DeferCleanup(l.halt)
		awaitLoad(ctx, 100, "ingest runs before the roll")
		mc := getMC(ns, name)
		var standby string
		for _, m := range mc.Status.Members {
			if m.Role == meshv1.RoleStandby {
				standby = m.Name
			}
		}
		Expect(standby).NotTo(BeEmpty())
		countOf := func(typ, reason string) int {
			n := 0
			for _, r := range eventReasons(Default, ns, name, typ) {
				if r == reason {
					n++
				}
			}
			return n
		}
		failingOver, promoted := countOf(corev1.EventTypeWarning, "FailingOver"), countOf(corev1.EventTypeNormal, "Promoted")
		finished := countOf(corev1.EventTypeNormal, "RollingUpdateFinished")
		var sts appsv1.StatefulSet
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: resources.StatefulSetName(mc)}, &sts)).To(Succeed())
		revBefore := sts.Status.UpdateRevision
		before := map[string]types.UID{}
		for _, p := range clusterPods(ns, name) {
			before[p.Name] = p.UID
		}

		// Watch the pods: replacement order, pods down at once, owners
		// deleted.
		var (
			mu        sync.Mutex
			replaced  []string
			maxDown   int
			ownerGone []string
		)
		wctx, stopWatch := context.WithCancel(ctx)
		watched := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			defer close(watched)
			for wctx.Err() == nil {
				var pods corev1.PodList
				got := &meshv1.MeshCluster{}
				if k8s.List(wctx, &pods, ctrlclient.InNamespace(ns), ctrlclient.MatchingLabels{resources.LabelInstance: name}) == nil &&
					k8s.Get(wctx, types.NamespacedName{Namespace: ns, Name: name}, got) == nil {
					owned := ownedCounts(got)
					mu.Lock()
					down := len(before)
					for i := range pods.Items {
						p := &pods.Items[i]
						if p.UID != before[p.Name] && !slices.Contains(replaced, p.Name) {
							replaced = append(replaced, p.Name)
						}
						if p.DeletionTimestamp != nil {
							if owned[p.Name] > 0 && !slices.Contains(ownerGone, p.Name) {
								ownerGone = append(ownerGone, p.Name)
							}
							continue
						}
						if podReady(p) {
							down--
						}
					}
					maxDown = max(maxDown, down)
					mu.Unlock()
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()

		start := time.Now()
		kubectl("patch", "-n", ns, "meshcluster/"+name, "--type=merge", "-p", patch)
		Eventually(func(g Gomega) {
			got := &meshv1.MeshCluster{}
			g.Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, got)).To(Succeed())
			var sts appsv1.StatefulSet
			g.Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: resources.StatefulSetName(got)}, &sts)).To(Succeed())
			rev := sts.Status.UpdateRevision
			g.Expect(rev).NotTo(Equal(revBefore))
			pods := clusterPods(ns, name)
			g.Expect(pods).To(HaveLen(len(before)))
			for i := range pods {
				p := &pods[i]
				g.Expect(p.UID).NotTo(Equal(before[p.Name]), "pod %s replaced", p.Name)
				g.Expect(p.Labels[appsv1.ControllerRevisionHashLabelKey]).To(Equal(rev), "pod %s", p.Name)
				g.Expect(podReady(p)).To(BeTrue(), "pod %s", p.Name)
			}
			settled(g, got)
			g.Expect(got.Status.Update).To(BeNil())
			for _, m := range got.Status.Members {
				g.Expect(m.Revision).To(Equal(rev), "member %s", m.Name)
			}
			counts := ownedCounts(got)
			g.Expect(counts).To(HaveLen(int(got.Spec.Nodes)), "every active owns shards again: %v", counts)
			lo, hi := 1<<30, 0
			for _, n := range counts {
				lo, hi = min(lo, n), max(hi, n)
			}
			g.Expect(hi-lo).To(BeNumerically("<=", 1), "%v", counts)
			g.Expect(countOf(corev1.EventTypeNormal, "RollingUpdateFinished")).To(BeNumerically(">", finished))
		}).WithContext(ctx).WithTimeout(3 * time.Minute).WithPolling(200 * time.Millisecond).Should(Succeed())
		record(fmt.Sprintf("operator-driven rolling %s update of %d pods under ingest to settled", what, len(before)), time.Since(start))
		stopWatch()
		<-watched

		mu.Lock()
		Expect(replaced).To(HaveLen(len(before)), "every pod replaced once: %v", replaced)
		Expect(replaced[0]).To(Equal(standby), "the standby goes first: %v", replaced)
		Expect(maxDown).To(BeNumerically("<=", 1), "one pod at a time")
		Expect(ownerGone).To(BeEmpty(), "pods deleted while their member owned shards")
		mu.Unlock()
		Expect(countOf(corev1.EventTypeWarning, "FailingOver")).To(Equal(failingOver), "no failover during the roll")
		Expect(countOf(corev1.EventTypeNormal, "Promoted")).To(Equal(promoted), "no promotion during the roll")
		Expect(eventReasons(Default, ns, name, corev1.EventTypeNormal)).To(ContainElements("RollingUpdateStarted", "RestartingPod", "PodUpdated"))
		awaitLoad(ctx, 100, "ingest goes on after the roll")
		l.halt()
		verifyReads(ctx, ns, name, cl, l, sent)
	}

	It("(d) rolls an image change pod by pod, handing shards off, with no failover and nothing acknowledged lost", func(ctx SpecContext) {
		roll(ctx, "image", `{"spec":{"image":"ghcr.io/purplerain/mesh-node:e2e-rolled"}}`)
	})

	It("(d) rolls a node configuration change (retention) the same way", func(ctx SpecContext) {
		roll(ctx, "config", `{"spec":{"retention":{"maxEvents":2000000}}}`)
	})
})
