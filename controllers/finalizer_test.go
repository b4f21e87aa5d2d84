package controllers_test

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers"
	"github.com/purplerain/mesh-operator/controllers/resources"
)

// dataPVC makes the claim the StatefulSet controller would make for pod
// ordinal ord (no controller makes it in envtest).
func dataPVC(mc *meshv1.MeshCluster, ord int) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("data-%s-%d", mc.Name, ord), Namespace: "default", Labels: resources.SelectorLabels(mc)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
}

var _ = Describe("Deleting a cluster", func() {
	ctx := context.Background()

	deleteWithPVCs := func(name string, retention meshv1.PVCRetention) []*corev1.PersistentVolumeClaim {
		mc := newCluster(name)
		mc.Spec.Nodes = 1
		mc.Spec.Standby.Replicas = ptrTo[int32](0)
		mc.Spec.Shards.Count = 2
		mc.Spec.Storage.Mode = meshv1.StorageDisk
		size := resource.MustParse("1Gi")
		mc.Spec.Storage.Size = &size
		mc.Spec.Storage.PVCRetention = retention
		Expect(k8sClient.Create(ctx, mc)).To(Succeed())
		startKubelet(name)
		Eventually(func(g Gomega) []string { return getCluster(g, name).Finalizers }, timeout, interval).Should(ContainElement(controllers.Finalizer))
		Eventually(func(g Gomega) int32 { return getCluster(g, name).Status.ReadyNodes }, 60*time.Second, 200*time.Millisecond).Should(Equal(int32(1)))
		var pvcs []*corev1.PersistentVolumeClaim
		for ord := range 2 { // ordinal 1 is left over from an earlier scale-down
			pvc := dataPVC(mc, ord)
			Expect(k8sClient.Create(ctx, pvc)).To(Succeed())
			DeferCleanup(func() { _ = k8sClient.Delete(ctx, pvc) })
			pvcs = append(pvcs, pvc)
		}

		Expect(k8sClient.Delete(ctx, mc)).To(Succeed())
		By("holding the cluster until its pods are gone")
		Eventually(func() bool { return apierrors.IsNotFound(k8sClient.Get(ctx, key(name), &meshv1.MeshCluster{})) }, 60*time.Second, 200*time.Millisecond).Should(BeTrue())
		pods := &corev1.PodList{}
		Expect(k8sClient.List(ctx, pods, client.InNamespace("default"), client.MatchingLabels(resources.SelectorLabels(mc)))).To(Succeed())
		for _, p := range pods.Items {
			Expect(p.DeletionTimestamp).NotTo(BeNil(), "pod %s still running when the cluster was released", p.Name)
		}
		return pvcs
	}

	It("deletes the data PVCs with pvcRetention Delete, after the pods", func() {
		for _, pvc := range deleteWithPVCs("epsilon", meshv1.PVCDelete) {
			Eventually(func() bool {
				got := &corev1.PersistentVolumeClaim{}
				err := k8sClient.Get(ctx, key(pvc.Name), got)
				return apierrors.IsNotFound(err) || (err == nil && got.DeletionTimestamp != nil)
			}, timeout, interval).Should(BeTrue(), pvc.Name)
		}
	})

	It("keeps the data PVCs with pvcRetention Retain, without owner references", func() {
		for _, pvc := range deleteWithPVCs("zeta", meshv1.PVCRetain) {
			Consistently(func(g Gomega) {
				got := &corev1.PersistentVolumeClaim{}
				g.Expect(k8sClient.Get(ctx, key(pvc.Name), got)).To(Succeed())
				g.Expect(got.DeletionTimestamp).To(BeNil())
				g.Expect(got.OwnerReferences).To(BeEmpty())
			}, 2*time.Second, 200*time.Millisecond).Should(Succeed(), pvc.Name)
		}
	})
})
