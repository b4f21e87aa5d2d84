package controllers_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	meshclient "github.com/purplerain/mesh-operator/client"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/topology"
)

// wireGate is a TCP proxy in front of a node's wire port (replication and
// the binary data API): the node listens on a port of its own and the
// gate forwards the wire port to it. Pausing the gate cuts every
// connection through it and refuses new ones until it resumes, as a
// network partition of that node's wire traffic would: its followers
// cannot replicate from it. The node, its logs and its followers are
// real; only the network between them stops.
type wireGate struct {
	ln      net.Listener
	backend string

	mu     sync.Mutex
	paused bool
	conns  map[net.Conn]bool
}

var (
	gatedMu       sync.Mutex
	gatedClusters = map[string]bool{}
	gates         = map[string]*wireGate{} // by pod and port: "<pod>/<port>"
	gatesByFront  = map[string]*wireGate{} // by the address it listens on
)

// gateClusterWire makes the test kubelet put a gate (wireGate) in front of
// the wire port and the admin port of every node of cluster it starts
// from now on.
func gateClusterWire(cluster string) {
	gatedMu.Lock()
	defer gatedMu.Unlock()
	gatedClusters[cluster] = true
	DeferCleanup(func() {
		gatedMu.Lock()
		defer gatedMu.Unlock()
		delete(gatedClusters, cluster)
	})
}

// gateWire and gateAdmin are called by the kubelet for each node it
// starts: for a gated cluster they start a gate on addr (closed when ctx
// ends) and return the address the node must listen on instead; else
// addr.
func gateWire(ctx context.Context, cluster, pod, addr string) (string, error) {
	return gatePort(ctx, cluster, pod, addr)
}

func gateAdmin(ctx context.Context, cluster, pod, addr string) (string, error) {
	return gatePort(ctx, cluster, pod, addr)
}

func gatePort(ctx context.Context, cluster, pod, addr string) (string, error) {
	gatedMu.Lock()
	defer gatedMu.Unlock()
	if !gatedClusters[cluster] {
		return addr, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	p, _ := strconv.Atoi(port)
	backend := net.JoinHostPort(host, strconv.Itoa(p+10))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("wire gate for %s: %w", pod, err)
	}
	g := &wireGate{ln: ln, backend: backend, conns: map[net.Conn]bool{}}
	gates[pod+"/"+port] = g
	gatesByFront[addr] = g
	go g.serve()
	go func() {
		<-ctx.Done()
		g.close()
	}()
	return backend, nil
}

// gateOf is the gate in front of pod's wire port, adminGateOf the one in
// front of its admin port.
func gateOf(pod string) *wireGate { return gateAt(pod, nodeconfig.WirePort) }

func adminGateOf(pod string) *wireGate { return gateAt(pod, nodeconfig.AdminPort) }

func gateAt(pod string, port int) *wireGate {
	gatedMu.Lock()
	defer gatedMu.Unlock()
	g := gates[fmt.Sprintf("%s/%d", pod, port)]
	Expect(g).NotTo(BeNil(), "no gate for %s port %d", pod, port)
	return g
}

// behindGate is the address a gate at addr forwards to (addr when none
// does): the test reads nodes there, past a partition it made.
func behindGate(addr string) string {
	gatedMu.Lock()
	defer gatedMu.Unlock()
	if g := gatesByFront[addr]; g != nil {
		return g.backend
	}
	return addr
}

func (g *wireGate) serve() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		g.mu.Lock()
		if g.paused {
			g.mu.Unlock()
			_ = c.Close()
			continue
		}
		g.mu.Unlock()
		go g.forward(c)
	}
}

func (g *wireGate) forward(c net.Conn) {
	b, err := net.DialTimeout("tcp", g.backend, 2*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	g.mu.Lock()
	if g.paused {
		g.mu.Unlock()
		_ = c.Close()
		_ = b.Close()
		return
	}
	g.conns[c], g.conns[b] = true, true
	g.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(b, c)
	go pipe(c, b)
	<-done
	_ = c.Close()
	_ = b.Close()
	<-done
	g.mu.Lock()
	delete(g.conns, c)
	delete(g.conns, b)
	g.mu.Unlock()
}

// pause cuts every connection and refuses new ones.
func (g *wireGate) pause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.paused = true
	for c := range g.conns {
		_ = c.Close()
	}
}

func (g *wireGate) resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.paused = false
}

func (g *wireGate) close() {
	g.pause()
	_ = g.ln.Close()
	gatedMu.Lock()
	defer gatedMu.Unlock()
	if gatesByFront[g.ln.Addr().String()] == g {
		delete(gatesByFront, g.ln.Addr().String())
	}
}

// timedOutEvents counts the MigrationTimedOut Warnings of a cluster that
// contain what.
func timedOutEvents(g Gomega, name, what string) int {
	n := 0
	for _, e := range eventsFor(g, name) {
		if e.Type == corev1.EventTypeWarning && e.Reason == "MigrationTimedOut" && strings.Contains(e.Note, what) {
			n++
			if e.Series != nil {
				n += int(e.Series.Count) - 1
			}
		}
	}
	return n
}

var _ = Describe("Shard moves", func() {
	ctx := context.Background()

	It("bounds a move by migration.timeout: Retry starts it again, Abort leaves the source the owner until the spec changes", func() {
		const name = "slow"
		gateClusterWire(name)
		kubelet, _ := startCluster(name, func(mc *meshv1.MeshCluster) {
			mc.Spec.Nodes = 2
			// No standby: the third active joins with an empty log.
			mc.Spec.Standby.Replicas = ptrTo[int32](0)
			mc.Spec.Shards.Count = 4
			mc.Spec.Migration.Timeout = metav1.Duration{Duration: time.Second}
			mc.Spec.Migration.OnTimeout = meshv1.OnTimeoutRetry
		})
		sdk, err := meshclient.New(ctx, meshclient.Options{Addresses: kubelet.dataAddrs(), RetryMax: 200 * time.Millisecond, Credentials: dataCredentials(name)})
		Expect(err).NotTo(HaveOccurred())
		// Every shard holds events, so a new owner has something to catch
		// up on.
		var events []meshclient.Event
		for i := range 400 {
			events = append(events, meshclient.Event{Key: []byte(fmt.Sprintf("k%d", i)), Payload: []byte(fmt.Sprintf("e%d", i))})
		}
		_, err = sdk.Ingest(ctx, events...)
		Expect(err).NotTo(HaveOccurred())

		By("cutting the owners' replication off and adding a third active: its follower cannot catch up")
		gateOf("slow-0").pause()
		gateOf("slow-1").pause()
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Nodes = 3 })
		Eventually(func(g Gomega) int { return timedOutEvents(g, name, "onTimeout Retry") }, 60*time.Second, 200*time.Millisecond).Should(BeNumerically(">=", 2), "the move times out and is started again")
		got := getCluster(Default, name)
		Expect(got.Status.Migrations).To(HaveLen(1))
		Expect(got.Status.Migrations[0].To).To(Equal("slow-2"))
		Expect(ownedCounts(got)["slow-2"]).To(BeZero(), "the source keeps the shard")
		for _, s := range got.Status.Shards {
			Expect(s.Fenced).To(BeFalse())
		}

		By("switching to onTimeout Abort: the next timeout aborts the move for good")
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Migration.OnTimeout = meshv1.OnTimeoutAbort })
		var aborted meshv1.MigrationStatus
		Eventually(func(g Gomega) {
			got := getCluster(g, name)
			g.Expect(got.Status.Migrations).To(HaveLen(1))
			aborted = got.Status.Migrations[0]
			g.Expect(aborted.Phase).To(Equal("Aborted"))
			c := meta.FindStatusCondition(got.Status.Conditions, meshv1.ConditionProgressing)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal("MigrationAborted"))
			g.Expect(c.Message).To(ContainSubstring(fmt.Sprintf("shard %d stays with %s", aborted.Shard, aborted.From)))
			d := meta.FindStatusCondition(got.Status.Conditions, meshv1.ConditionDegraded)
			g.Expect(d).NotTo(BeNil())
			g.Expect(d.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(d.Reason).To(Equal("MigrationAborted"))
			g.Expect(d.Message).To(ContainSubstring(fmt.Sprintf("shard %d stays with %s", aborted.Shard, aborted.From)))
			g.Expect(timedOutEvents(g, name, "onTimeout Abort")).To(BeNumerically(">=", 1))
		}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
		Expect(aborted.To).To(Equal("slow-2"))
		Consistently(func(g Gomega) {
			got := getCluster(g, name)
			g.Expect(ownedCounts(got)["slow-2"]).To(BeZero())
			s := got.Status.Shards[aborted.Shard]
			g.Expect(s.Owner).To(Equal(aborted.From))
			g.Expect(s.Fenced).To(BeFalse())
		}, 3*time.Second, 200*time.Millisecond).Should(Succeed())

		By("writing to the aborted shard at its source")
		for i := 0; ; i++ {
			k := []byte(fmt.Sprintf("probe-%d", i))
			if int32(topology.KeyShard(k, 4)) != aborted.Shard {
				continue
			}
			ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
			acks, err := sdk.Ingest(ictx, meshclient.Event{Key: k, Payload: []byte("probe")})
			cancel()
			Expect(err).NotTo(HaveOccurred())
			Expect(int32(acks[0].Shard)).To(Equal(aborted.Shard))
			break
		}

		By("editing the spec (a longer timeout) with replication back: the move is tried again and completes")
		gateOf("slow-0").resume()
		gateOf("slow-1").resume()
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Migration.Timeout = metav1.Duration{Duration: time.Minute} })
		Eventually(func(g Gomega) {
			got := getCluster(g, name)
			counts := ownedCounts(got)
			g.Expect(counts).To(HaveLen(3))
			g.Expect(counts["slow-2"]).To(Equal(1))
			g.Expect(got.Status.Migrations).To(BeEmpty())
			g.Expect(meta.IsStatusConditionFalse(got.Status.Conditions, meshv1.ConditionProgressing)).To(BeTrue(), "%v", got.Status.Conditions)
			g.Expect(meta.IsStatusConditionFalse(got.Status.Conditions, meshv1.ConditionDegraded)).To(BeTrue(), "%v", got.Status.Conditions)
		}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
	})

	It("runs up to maxConcurrent moves at once, balances, loses nothing, and drops the followers the moves left once standbys caught up", func() {
		const name = "wide"
		kubelet, _ := startCluster(name, concurrentMoves)
		load := startLoad(kubelet)

		By("scaling up 2→4 actives and watching status.migrations")
		most := 0
		stopPoll := make(chan struct{})
		polled := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			defer close(polled)
			for {
				select {
				case <-stopPoll:
					return
				case <-time.After(10 * time.Millisecond):
				}
				got := &meshv1.MeshCluster{}
				if k8sClient.Get(ctx, key(name), got) == nil {
					most = max(most, len(got.Status.Migrations))
				}
			}
		}()
		start := time.Now()
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Nodes = 4 })
		Eventually(func(g Gomega) {
			got := getCluster(g, name)
			counts := ownedCounts(got)
			g.Expect(counts).To(HaveLen(4), "%v", counts)
			for n, c := range counts {
				g.Expect(c).To(Equal(2), "%s owns %d: %v", n, c, counts)
			}
			g.Expect(got.Status.Migrations).To(BeEmpty())
			for _, s := range got.Status.Shards {
				g.Expect(s.Fenced).To(BeFalse())
			}
		}, 90*time.Second, 100*time.Millisecond).Should(Succeed())
		close(stopPoll)
		<-polled
		fmt.Fprintf(GinkgoWriter, "scale-up 2→4 balanced in %s, at most %d migrations in flight at once (maxConcurrent 3)\n", time.Since(start).Round(time.Millisecond), most)
		Expect(most).To(BeNumerically(">", 1))
		Expect(most).To(BeNumerically("<=", 3))

		By("converging every shard's followers to the standby, in status and on the nodes")
		Eventually(func(g Gomega) {
			got := getCluster(g, name)
			// Which pod is the standby depends on the order the new pods
			// joined in (a kept standby becomes active when actives are
			// too few).
			standby := ""
			for _, m := range got.Status.Members {
				if m.Role == meshv1.RoleStandby {
					standby = m.Name
				}
			}
			g.Expect(standby).NotTo(BeEmpty())
			for _, s := range got.Status.Shards {
				g.Expect(s.Followers).To(Equal([]string{standby}), "shard %d", s.ID)
			}
			for pod, addr := range kubelet.adminAddrs() {
				st := nodeStatus(g, name, addr)
				g.Expect(st.Epoch).To(Equal(uint64(got.Status.Epoch)))
				if pod == standby {
					g.Expect(st.Followed).To(HaveLen(8))
				} else {
					g.Expect(st.Followed).To(BeEmpty(), "%s follows %v", pod, st.Followed)
					g.Expect(st.Owned).To(HaveLen(2))
				}
			}
		}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
		Eventually(func(g Gomega) []string { return eventReasons(g, name, corev1.EventTypeNormal) }, timeout, interval).Should(ContainElement("FollowersDropped"))
		n := load.count()
		Eventually(load.count, 10*time.Second).Should(BeNumerically(">", n+100), "ingest goes on with the standby as the only follower")

		By("reading back every acknowledged event exactly once")
		load.expectExactlyOnce(kubelet.dataAddrs())
	})
})
