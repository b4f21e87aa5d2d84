package controllers_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	meshclient "github.com/purplerain/mesh-operator/client"
	"github.com/purplerain/mesh-operator/controllers"
	"github.com/purplerain/mesh-operator/controllers/resources"
	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/redex"
	meshwire "github.com/purplerain/mesh-operator/engine/wire"
	"github.com/purplerain/mesh-operator/node/adminclient"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/replication"
)

// secretKey reads the key pair a cluster's Secret holds now.
func secretKey(g Gomega, name string) *identity.KeyPair {
	s := &corev1.Secret{}
	g.Expect(k8sClient.Get(context.Background(), key(name), s)).To(Succeed())
	kp, err := identity.KeyPairFromSecretData(s.Data)
	g.Expect(err).NotTo(HaveOccurred())
	return kp
}

// replicationAccepted subscribes to shard on the owner's wire address with
// a replication token signed by signer, as a follower would, and says
// whether the owner accepted the subscription (false: it denied the
// token).
func replicationAccepted(wire string, shard uint16, epoch uint64, signer *identity.KeyPair) bool {
	l, err := redex.Open(redex.Options{Name: "probe"})
	Expect(err).NotTo(HaveOccurred())
	defer l.Close()
	f, err := replication.StartFollower(replication.FollowerOptions{
		Name: "rotation-probe", Shard: shard, Addr: wire, Log: l,
		Epoch: func() uint64 { return epoch },
		Token: func() ([]byte, error) {
			tok, err := signer.TryIssue(identity.Grant{Subject: signer.PublicKey(), Scope: identity.ScopeReplicate, Shard: shard, ShardBound: true, TTL: time.Minute}, time.Now())
			if err != nil {
				return nil, err
			}
			return tok.Encode(), nil
		},
	})
	Expect(err).NotTo(HaveOccurred())
	defer f.Close()
	var accepted bool
	Eventually(func() bool {
		st := f.Status()
		var denied *replication.DeniedError
		switch {
		case st.Subscriptions > 0:
			accepted = true
			return true
		case errors.As(st.LastErr, &denied):
			return true
		}
		return false
	}, 10*time.Second, 20*time.Millisecond).Should(BeTrue(), "the owner neither accepted nor denied the subscription")
	return accepted
}

var _ = Describe("Credential rotation", func() {
	ctx := context.Background()

	It("rotates the operator and cluster keys under SDK ingest without a pod restart or an acknowledged loss, once per value", func() {
		const name = "rotate"
		DeferCleanup(controllers.SetRotationGrace(2 * time.Second))
		mc := newCluster(name)
		mc.Spec.Standby.AckPolicy = meshv1.AckStandby
		Expect(k8sClient.Create(ctx, mc)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, mc))).To(Succeed()) })
		kubelet := startKubelet(name)
		waitAvailable(name)
		sdk, err := meshclient.New(ctx, meshclient.Options{Addresses: kubelet.dataAddrs(), RetryMax: 200 * time.Millisecond, Credentials: dataCredentials(name)})
		Expect(err).NotTo(HaveOccurred())

		oldOperator := secretKey(Default, name+"-operator-key")
		oldCluster := secretKey(Default, name+"-cluster-key")
		pods := &corev1.PodList{}
		Expect(k8sClient.List(ctx, pods, client.InNamespace("default"), client.MatchingLabels(resources.SelectorLabels(mc)))).To(Succeed())
		Expect(pods.Items).To(HaveLen(4))
		uids := map[string]types.UID{}
		ips := map[string]string{}
		for _, p := range pods.Items {
			uids[p.Name], ips[p.Name] = p.UID, kubelet.ip(p.Name)
		}

		load := startIngest(sdk)
		Eventually(load.count, 10*time.Second).Should(BeNumerically(">", 100))
		Expect(dataCredentials(name).ServerKeys).To(ConsistOf(BeEquivalentTo(oldCluster.PublicKey())), "the data Secret names the cluster key for clients to pin")

		By("requesting a rotation")
		start := time.Now()
		before := load.count()
		updateCluster(name, func(m *meshv1.MeshCluster) {
			if m.Annotations == nil {
				m.Annotations = map[string]string{}
			}
			m.Annotations[meshv1.RotateCredentialsAnnotation] = "r1"
		})
		var rotated *meshv1.MeshCluster
		sawBothServerKeys := false
		Eventually(func(g Gomega) {
			if keys := dataCredentials(name).ServerKeys; len(keys) == 2 && keys[0].Equal(oldCluster.PublicKey()) {
				sawBothServerKeys = true // the old key and the next one, while nodes switch
			}
			rotated = getCluster(g, name)
			g.Expect(rotated.Status.Credentials).NotTo(BeNil())
			g.Expect(rotated.Status.Credentials.Rotation).To(Equal("r1"))
			g.Expect(rotated.Status.Credentials.RotatedAt).NotTo(BeNil())
		}, 90*time.Second, 100*time.Millisecond).Should(Succeed())
		fmt.Fprintf(GinkgoWriter, "rotation done in %s (grace 2s)\n", time.Since(start).Round(time.Millisecond))
		Expect(load.count()).To(BeNumerically(">", before), "the SDK ingested during the rotation")
		Expect(sawBothServerKeys).To(BeTrue(), "the data Secret never named both cluster keys during the rotation")
		Eventually(func(g Gomega) []string { return eventReasons(g, name, corev1.EventTypeNormal) }, timeout, interval).Should(ContainElements("CredentialsRotating", "CredentialsRotated"))

		newOperator := secretKey(Default, name+"-operator-key")
		newCluster := secretKey(Default, name+"-cluster-key")
		Expect(newOperator.PublicKey().Equal(oldOperator.PublicKey())).To(BeFalse(), "operator key not replaced")
		Expect(newCluster.PublicKey().Equal(oldCluster.PublicKey())).To(BeFalse(), "cluster key not replaced")
		secret := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, key(name+"-operator-key"), secret)).To(Succeed())
		Expect(secret.Data).To(HaveLen(2), "the rotation record is cleared: only the current key remains")
		Expect(secret.Annotations).NotTo(HaveKey(resources.RotationPhaseAnnotation))

		By("every node refuses admin tokens signed with the old operator key and accepts the new one")
		for pod, ip := range ips {
			addr := net.JoinHostPort(ip, fmt.Sprint(nodeconfig.AdminPort))
			_, err := adminclient.NewCredentialsClient(oldOperator, nil, addr).Credentials(ctx)
			var se *adminclient.StatusError
			Expect(errors.As(err, &se)).To(BeTrue(), "%s: %v", pod, err)
			Expect(se.Status).To(Equal(http.StatusUnauthorized), pod)
			creds, err := adminclient.NewCredentialsClient(newOperator, nil, addr).Credentials(ctx)
			Expect(err).NotTo(HaveOccurred(), pod)
			Expect(creds.OperatorKeys).To(ConsistOf(BeEquivalentTo(newOperator.PublicKey())), pod)
			Expect(creds.ClusterKeys).To(ConsistOf(BeEquivalentTo(newCluster.PublicKey())), pod)
			Expect(creds.ClusterSigningKey).To(BeEquivalentTo(newCluster.PublicKey()), pod)
		}

		By("shard owners refuse replication tokens signed with the old cluster key and accept the new one")
		shard := rotated.Status.Shards[0]
		wire := net.JoinHostPort(kubelet.ip(shard.Owner), fmt.Sprint(nodeconfig.WirePort))
		epoch := uint64(rotated.Status.Epoch)
		Expect(replicationAccepted(wire, uint16(shard.ID), epoch, oldCluster)).To(BeFalse(), "old cluster key accepted")
		Expect(replicationAccepted(wire, uint16(shard.ID), epoch, newCluster)).To(BeTrue(), "new cluster key refused")

		By("the data grant was re-signed: an SDK loading the data Secret again is accepted, one holding the old grant is refused")
		fresh, err := meshclient.New(ctx, meshclient.Options{Addresses: kubelet.dataAddrs(), RetryMax: 200 * time.Millisecond, Credentials: dataCredentials(name)})
		Expect(err).NotTo(HaveOccurred())
		_, err = fresh.Ingest(ctx, meshclient.Event{Payload: []byte("after-rotation/")})
		Expect(err).NotTo(HaveOccurred())
		// Under ackPolicy Standby every ack needs a follower, which must
		// accept its owner's handshake signed with the new cluster key:
		// keyless events go round the routable shards, so every owner and
		// its follower are exercised.
		ictx, icancel := context.WithTimeout(ctx, 30*time.Second)
		for i := range 3 * len(rotated.Status.Shards) {
			_, err = fresh.Ingest(ictx, meshclient.Event{Payload: fmt.Appendf(nil, "after-rotation/%d", i)})
			Expect(err).NotTo(HaveOccurred(), "ingest under ackPolicy Standby after the rotation")
		}
		icancel()
		load.stop()
		stale, err := meshclient.New(ctx, meshclient.Options{Addresses: kubelet.dataAddrs(), RetryMax: 200 * time.Millisecond, Credentials: &identity.DataCredentials{Key: dataCredentials(name).Key, Grant: oldGrant(oldOperator, dataCredentials(name).Key)}})
		if err == nil {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, err = stale.Ingest(cctx, meshclient.Event{Payload: []byte("stale/")})
			cancel()
		}
		Expect(err).To(HaveOccurred(), "a data grant signed with the old operator key is still accepted")

		By("the data Secret names only the new cluster key: a binary SDK pinning it is served, one pinning the old key refuses the nodes")
		Expect(dataCredentials(name).ServerKeys).To(ConsistOf(BeEquivalentTo(newCluster.PublicKey())))
		pinned, err := meshclient.New(ctx, meshclient.Options{Addresses: kubelet.dataAddrs(), Transport: meshclient.TransportBinary, RetryMax: 200 * time.Millisecond, Credentials: dataCredentials(name)})
		Expect(err).NotTo(HaveOccurred())
		defer pinned.Close()
		_, err = pinned.Ingest(ctx, meshclient.Event{Payload: []byte("pinned/")})
		Expect(err).NotTo(HaveOccurred())
		pinnedOld := dataCredentials(name)
		pinnedOld.ServerKeys = []ed25519.PublicKey{oldCluster.PublicKey()}
		stalePin, err := meshclient.New(ctx, meshclient.Options{Addresses: kubelet.dataAddrs(), Transport: meshclient.TransportBinary, RetryMax: 200 * time.Millisecond, Credentials: pinnedOld})
		Expect(err).NotTo(HaveOccurred())
		defer stalePin.Close()
		// The refusal comes at the first handshake, unretried; the context
		// only bounds a dial the busy machine is slow to answer, and a
		// refusal found only when it ended would be no answer from the
		// nodes (the client's last attempt may be a dial cut off).
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err = stalePin.Ingest(cctx, meshclient.Event{Payload: []byte("stale-pin/")})
		cancel()
		Expect(errors.Is(err, meshwire.ErrHandshake)).To(BeTrue(), "a client pinning the old cluster key: %v", err)
		Expect(errors.Is(err, context.DeadlineExceeded)).To(BeFalse(), "the refusal came only when the context ended: %v", err)

		By("no pod restarted")
		Expect(k8sClient.List(ctx, pods, client.InNamespace("default"), client.MatchingLabels(resources.SelectorLabels(mc)))).To(Succeed())
		Expect(pods.Items).To(HaveLen(4))
		for _, p := range pods.Items {
			Expect(p.UID).To(Equal(uids[p.Name]), "pod %s was replaced", p.Name)
			Expect(kubelet.ip(p.Name)).To(Equal(ips[p.Name]), "node %s was restarted", p.Name)
		}

		By("nothing acknowledged was lost")
		expectEveryAckRead(fresh, load)

		By("the same value again does nothing")
		at := rotated.Status.Credentials.RotatedAt
		updateCluster(name, func(m *meshv1.MeshCluster) {
			m.Annotations[meshv1.RotateCredentialsAnnotation] = "r1"
			m.Annotations["test/touch"] = "1" // an update the operator sees
		})
		Consistently(func(g Gomega) {
			got := getCluster(g, name)
			g.Expect(got.Status.Credentials.RotatedAt.Equal(at)).To(BeTrue())
			g.Expect(secretKey(g, name+"-operator-key").PublicKey().Equal(newOperator.PublicKey())).To(BeTrue())
			g.Expect(secretKey(g, name+"-cluster-key").PublicKey().Equal(newCluster.PublicKey())).To(BeTrue())
		}, 5*time.Second, 250*time.Millisecond).Should(Succeed())
	})

	It("finishes a rotation exactly once when the operator crashes after each of its steps", func() {
		const name = "rotcrash"
		DeferCleanup(controllers.SetRotationGrace(time.Second))
		mc := newCluster(name)
		mc.Spec.Nodes = 2
		mc.Spec.Shards.Count = 4
		Expect(k8sClient.Create(ctx, mc)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, mc))).To(Succeed()) })
		kubelet := startKubelet(name)
		waitAvailable(name)
		oldOperator := secretKey(Default, name+"-operator-key")
		oldCluster := secretKey(Default, name+"-cluster-key")

		c := armCrasher(name, 20)
		c.arm(true)
		updateCluster(name, func(m *meshv1.MeshCluster) {
			if m.Annotations == nil {
				m.Annotations = map[string]string{}
			}
			m.Annotations[meshv1.RotateCredentialsAnnotation] = "r1"
		})
		c.runUntil("rotation", 3*time.Minute, func(Gomega) bool {
			got := &meshv1.MeshCluster{}
			secret := &corev1.Secret{}
			return k8sClient.Get(ctx, key(name), got) == nil && got.Status.Credentials != nil && got.Status.Credentials.Rotation == "r1" &&
				k8sClient.Get(ctx, key(name+"-operator-key"), secret) == nil && secret.Annotations[resources.RotationPhaseAnnotation] == ""
		})
		c.arm(false)
		Expect(c.steps(0)).To(ContainElements(controllers.StepRotationBegun,
			controllers.StepRotationPushed+"Trust", controllers.StepRotationClusterKey, controllers.StepRotationGrantResigned, controllers.StepRotationSwitched,
			controllers.StepRotationPushed+"Switch", controllers.StepRotationDropDue,
			controllers.StepRotationPushed+"Drop", controllers.StepRotationStatusRecorded))
		fmt.Fprintf(GinkgoWriter, "rotation crashed at %d points and finished\n", c.count())

		By("rotated exactly once: one finished rotation, the keys replaced")
		// The operator clears the record and then counts the rotation, so
		// the count may trail what the test saw by a moment.
		rotations := func() float64 {
			n, _ := operatorMetric(Default, "mesh_operator_credential_rotations_total", name)
			return n
		}
		Eventually(rotations).WithTimeout(10 * time.Second).Should(BeEquivalentTo(1))
		Consistently(rotations).WithTimeout(time.Second).Should(BeEquivalentTo(1))
		newOperator := secretKey(Default, name+"-operator-key")
		newCluster := secretKey(Default, name+"-cluster-key")
		Expect(newOperator.PublicKey().Equal(oldOperator.PublicKey())).To(BeFalse())
		Expect(newCluster.PublicKey().Equal(oldCluster.PublicKey())).To(BeFalse())

		By("every node holds exactly the keys in the Secrets")
		pods := &corev1.PodList{}
		Expect(k8sClient.List(ctx, pods, client.InNamespace("default"), client.MatchingLabels(resources.SelectorLabels(mc)))).To(Succeed())
		for _, p := range pods.Items {
			addr := net.JoinHostPort(kubelet.ip(p.Name), fmt.Sprint(nodeconfig.AdminPort))
			creds, err := adminclient.NewCredentialsClient(newOperator, nil, addr).Credentials(ctx)
			Expect(err).NotTo(HaveOccurred(), p.Name)
			Expect(creds.OperatorKeys).To(ConsistOf(BeEquivalentTo(newOperator.PublicKey())), p.Name)
			Expect(creds.ClusterKeys).To(ConsistOf(BeEquivalentTo(newCluster.PublicKey())), p.Name)
			Expect(creds.ClusterSigningKey).To(BeEquivalentTo(newCluster.PublicKey()), p.Name)
		}

		By("the cluster serves: an SDK with the re-signed data grant ingests")
		sdk, err := meshclient.New(ctx, meshclient.Options{Addresses: kubelet.dataAddrs(), RetryMax: 200 * time.Millisecond, Credentials: dataCredentials(name)})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() error {
			ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err := sdk.Ingest(ictx, meshclient.Event{Payload: []byte("after/")})
			return err
		}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	})
})

// oldGrant is a data grant to dataKey signed with the replaced operator
// key, as an application that never reloaded the data Secret holds.
func oldGrant(operator, dataKey *identity.KeyPair) *identity.Token {
	g, err := operator.TryIssue(identity.Grant{Subject: dataKey.PublicKey(), Scope: identity.DataScope, TTL: time.Hour, Delegation: 1}, time.Now())
	Expect(err).NotTo(HaveOccurred())
	return g
}
