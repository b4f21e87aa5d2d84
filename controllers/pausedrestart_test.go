package controllers_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	meshclient "github.com/purplerain/mesh-operator/client"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/runtime"
	"github.com/purplerain/mesh-operator/node/topology"
)

// restartContainer restarts a pod's node process in place, as the kubelet
// restarts a crashed container: same pod, same address, and (Memory mode)
// an empty log and no topology.
func (k *testKubelet) restartContainer(name string) {
	k.mu.Lock()
	rp := k.pods[name]
	k.mu.Unlock()
	Expect(rp).NotTo(BeNil(), "pod %s runs no node", name)
	rp.cancel()
	<-rp.exited
	cfg, err := nodeconfig.Load(filepath.Join(k.dir, name, nodeconfig.FileName))
	Expect(err).NotTo(HaveOccurred())
	runCtx, cancel := context.WithCancel(context.Background())
	hp := func(port int) string { return net.JoinHostPort(rp.ip, fmt.Sprint(port)) }
	wire, err := gateWire(runCtx, k.cluster, name, hp(nodeconfig.WirePort))
	Expect(err).NotTo(HaveOccurred())
	admin, err := gateAdmin(runCtx, k.cluster, name, hp(nodeconfig.AdminPort))
	Expect(err).NotTo(HaveOccurred())
	exited := make(chan error, 1)
	go func() {
		exited <- runtime.Run(runCtx, runtime.Options{
			Config: cfg, Name: name,
			AdminAddr: admin, DataAddr: hp(nodeconfig.DataPort), WireAddr: wire,
			DrainTimeout: 2 * time.Second,
		})
	}()
	k.mu.Lock()
	rp.cancel, rp.exited = cancel, exited
	k.mu.Unlock()
}

var _ = Describe("A restarted operator of a paused cluster", func() {
	ctx := context.Background()

	It("keeps renewing the other owners' leases, does not hand ownership to an owner whose container restarted empty while no operator ran (memory mode), and fails it over once unpaused", func() {
		const name = "dozy"
		kubelet, _ := startCluster(name, func(mc *meshv1.MeshCluster) {
			mc.Spec.Nodes = 2
			mc.Spec.Shards.Count = 4
			mc.Spec.Standby.AckPolicy = meshv1.AckStandby
			// Only the restart detection can fail it over in this spec.
			mc.Spec.Standby.FailoverAfter = metav1.Duration{Duration: time.Hour}
		})
		load := startLoad(kubelet)

		By("pausing the cluster")
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Paused = true })
		Eventually(func(g Gomega) meshv1.Phase { return getCluster(g, name).Status.Phase }, timeout, interval).Should(Equal(meshv1.PhasePaused))
		paused := getCluster(Default, name)
		Expect(ownedCounts(paused)[name+"-0"]).To(BeNumerically(">", 0), "dozy-0 must own shards for this spec to mean anything")

		By("stopping the operator, then restarting dozy-0's container in place (same address, empty log)")
		startOperator := stopOperator()
		kubelet.restartContainer(name + "-0")
		dial := adminDialer(Default, name)
		addr := net.JoinHostPort(kubelet.ip(name+"-0"), fmt.Sprint(nodeconfig.AdminPort))
		Eventually(func() error {
			st, err := dial(addr).Status(ctx)
			if err == nil && st.Epoch != 0 {
				err = fmt.Errorf("the restarted node holds epoch %d", st.Epoch)
			}
			return err
		}, timeout, interval).Should(Succeed())
		owned, stopWatch := watchOwned(dial, addr, "the restarted node")

		By("starting a fresh operator while paused: it keeps renewing the other owners but withholds ownership from dozy-0")
		startOperator()
		// Keys of shards that owners other than dozy-0 own: those owners
		// did not restart and hold a lease only while the operator renews
		// it (an owner stops accepting writes one lease after the last
		// push it got).
		lease := paused.Spec.Standby.LeaseDuration.Duration
		Expect(lease).To(BeNumerically(">", 0))
		others := map[uint16]bool{}
		for _, s := range paused.Status.Shards {
			if s.Owner != name+"-0" {
				others[uint16(s.ID)] = true
			}
		}
		Expect(others).NotTo(BeEmpty())
		var keys [][]byte
		for i := 0; len(keys) < 16; i++ {
			if k := []byte(fmt.Sprintf("kept-%d", i)); others[topology.KeyShard(k, int(paused.Spec.Shards.Count))] {
				keys = append(keys, k)
			}
		}
		// Each write goes through the load's SDK, so the read-back holds
		// it to exactly once too. The generous timeout only rides out a
		// slow machine: an owner whose lease is not renewed refuses
		// writes for good (nothing renews it while paused).
		probes := 0
		ingestOthers := func() error {
			k := keys[probes%len(keys)]
			e := meshclient.Event{Key: k, Payload: []byte(fmt.Sprintf("kept-%d/%s", probes, k))}
			probes++
			ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			acks, err := load.sdk.Ingest(ictx, e)
			if err != nil {
				return err
			}
			if !others[acks[0].Shard] {
				return fmt.Errorf("key %s acknowledged on shard %d, which dozy-0 owns", k, acks[0].Shard)
			}
			load.mu.Lock()
			load.acked[string(e.Payload)] = true
			load.mu.Unlock()
			return nil
		}
		// The first write waits for the fresh operator's first push (the
		// old one's last may have run out while no operator ran).
		Eventually(ingestOthers, 60*time.Second, interval).Should(Succeed(), "the owners that did not restart never accepted writes after the operator restart")
		first := time.Now()
		// Then every write is accepted, up to one begun more than three
		// leases after the first: without renewals their leases would have
		// run out by then.
		for {
			begun := time.Now()
			Expect(ingestOthers()).To(Succeed(), "an owner that did not restart stopped accepting writes %s after the first accepted one (lease %s)", begun.Sub(first).Round(time.Millisecond), lease)
			Expect(owned).NotTo(Receive(), "ownership was pushed to a node that lost its log")
			if begun.Sub(first) > 3*lease+lease/2 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		fmt.Fprintf(GinkgoWriter, "paused after an operator restart: %d writes to the owners that did not restart accepted across %s (lease %s)\n", probes, time.Since(first).Round(time.Millisecond), lease)
		By("changing no ownership while paused: same epoch, same owners, dozy-0's shards not failed over")
		got := getCluster(Default, name)
		Expect(got.Status.Phase).To(Equal(meshv1.PhasePaused))
		Expect(got.Status.Epoch).To(Equal(paused.Status.Epoch))
		Expect(got.Status.Shards).To(Equal(paused.Status.Shards))
		Expect(eventReasons(Default, name, corev1.EventTypeNormal)).NotTo(ContainElement("Promoted"))

		By("unpausing: dozy-0's shards are failed over")
		updateCluster(name, func(m *meshv1.MeshCluster) { m.Spec.Paused = false })
		expectFailedOver(name, owned, stopWatch)
		n := load.count()
		Eventually(load.count, 10*time.Second).Should(BeNumerically(">", n+100))

		By("reading back every acknowledged event exactly once")
		load.expectExactlyOnce(kubelet.dataAddrs())
	})
})
