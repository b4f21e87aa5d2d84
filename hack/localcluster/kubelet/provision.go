package kubelet

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// provisionedLabel marks the PersistentVolumes the kubelet created.
const provisionedLabel = "node.purplerain.io/process-kubelet-volume"

// volumeName is the PersistentVolume standing in for a claim.
func volumeName(pvc *corev1.PersistentVolumeClaim) string { return "local-" + string(pvc.UID) }

// provision creates a PersistentVolume pre-bound to an unbound claim, with
// the claim's directory as a hostPath, so the persistent-volume binder of
// the controller manager marks the claim Bound, as a dynamic provisioner
// would. The reclaim policy is Retain: the kubelet removes the volume and
// the directory itself when the claim goes.
func (k *Kubelet) provision(pvc *corev1.PersistentVolumeClaim) {
	if pvc.Spec.VolumeName != "" || pvc.DeletionTimestamp != nil {
		return
	}
	size, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok {
		size = resource.MustParse("1Gi")
	}
	modes := pvc.Spec.AccessModes
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	class := ""
	if pvc.Spec.StorageClassName != nil {
		class = *pvc.Spec.StorageClassName
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: volumeName(pvc), Labels: map[string]string{provisionedLabel: "true"}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   modes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              class,
			VolumeMode:                    pvc.Spec.VolumeMode,
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID,
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: ClaimDir(k.cfg.RootDir, pvc.Namespace, pvc.Name, pvc.UID),
			}},
		},
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(k.ctx), 10*time.Second)
	defer cancel()
	if _, err := k.cfg.Client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		k.cfg.Log.Warn("provision volume", "claim", pvc.Namespace+"/"+pvc.Name, "err", err)
	}
}

// claimDeleted removes the directory and the volume of a deleted claim:
// its data goes with it, as with a dynamically provisioned volume.
func (k *Kubelet) claimDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pvc, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok {
		return
	}
	k.removeClaimDir(pvc)
	if !k.cfg.ProvisionVolumes {
		return
	}
	k.wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(k.ctx), 10*time.Second)
		defer cancel()
		err := k.cfg.Client.CoreV1().PersistentVolumes().Delete(ctx, volumeName(pvc), metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			k.cfg.Log.Warn("remove provisioned volume", "claim", pvc.Namespace+"/"+pvc.Name, "err", err)
		}
	})
}
