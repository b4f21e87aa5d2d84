package controllers_test

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/node/adminclient"
)

func runtimeConvert(u *unstructured.Unstructured, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into)
}

func resourceQuantity(s string) resource.Quantity { return resource.MustParse(s) }

func clusterOf(name string) *meshv1.MeshCluster {
	return &meshv1.MeshCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
}

// startCluster creates the MeshCluster name as newCluster(name) changed by
// shape, deletes it when the spec ends, starts its pods on the test
// kubelet and waits until it is Available. It returns the kubelet and the
// Available cluster.
func startCluster(name string, shape func(*meshv1.MeshCluster)) (*testKubelet, *meshv1.MeshCluster) {
	GinkgoHelper()
	ctx := context.Background()
	mc := newCluster(name)
	shape(mc)
	Expect(k8sClient.Create(ctx, mc)).To(Succeed())
	DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, mc))).To(Succeed()) })
	kubelet := startKubelet(name)
	return kubelet, waitAvailable(name)
}

// concurrentMoves is the shape of the specs that move several shards at
// once: two actives, eight shards, up to three moves in flight, standby
// acknowledgements.
func concurrentMoves(mc *meshv1.MeshCluster) {
	mc.Spec.Nodes = 2
	mc.Spec.Shards.Count = 8
	mc.Spec.Migration.MaxConcurrent = 3
	mc.Spec.Standby.AckPolicy = meshv1.AckStandby
}

// startLoad starts the counted ingest through kubelet's pods and waits
// until it had more than 100 events acknowledged.
func startLoad(kubelet *testKubelet) *countedLoad {
	GinkgoHelper()
	load := startCountedIngest(kubelet)
	Eventually(load.count, 10*time.Second).Should(BeNumerically(">", 100))
	return load
}

// stopOperator stops the operator and returns the func that starts it
// again; if the spec ends before that ran, its cleanup starts it.
func stopOperator() (start func()) {
	stopManager()
	restarted := false
	DeferCleanup(func() {
		if !restarted {
			startManager()
		}
	})
	return func() {
		startManager()
		restarted = true
	}
}

// watchOwned polls the admin API of the node at addr through dial until
// stop is called (stop returns once the polling ended). The first time
// the node reports owning shards, owned receives a message saying so
// about what ("the fresh node").
func watchOwned(dial adminclient.Dialer, addr, what string) (owned chan string, stop func()) {
	owned = make(chan string, 1)
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(watched)
		for watchCtx.Err() == nil {
			if st, err := dial(addr).Status(watchCtx); err == nil && len(st.Owned) > 0 {
				select {
				case owned <- fmt.Sprintf("%s owns %v at epoch %d", what, st.Owned, st.Epoch):
				default:
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return owned, func() {
		stopWatch()
		<-watched
	}
}

// expectFailedOver waits until name-0 owns no shard and is a ready
// standby beside two ready actives, with a Promoted event recorded; then
// it stops the ownership watch of name-0 (watchOwned) and checks that the
// watch never saw it own shards.
func expectFailedOver(name string, owned chan string, stopWatch func()) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		got := getCluster(g, name)
		g.Expect(ownedCounts(got)).NotTo(HaveKey(name + "-0"))
		var roles []string
		for _, m := range got.Status.Members {
			roles = append(roles, fmt.Sprintf("%s:%s:%v", m.Name, m.Role, m.Ready))
		}
		g.Expect(roles).To(ConsistOf(name+"-0:standby:true", name+"-1:active:true", name+"-2:active:true"))
	}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
	Eventually(func(g Gomega) []string { return eventReasons(g, name, corev1.EventTypeNormal) }, timeout, interval).Should(ContainElement("Promoted"))
	stopWatch()
	Expect(owned).NotTo(Receive(), "ownership was pushed to a node that lost its log")
}
