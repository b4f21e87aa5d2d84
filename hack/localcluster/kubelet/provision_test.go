package kubelet

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// runKubelet starts a kubelet against cs until the test ends.
func runKubelet(t *testing.T, cs kubernetes.Interface, cfg Config) Config {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg.NodeName, cfg.Client = "test-node", cs
	cfg.Images = ImageMap{"example.com/helper": self}
	cfg.RootDir, cfg.LogDir = t.TempDir(), t.TempDir()
	if cfg.IPs, err = NewIPPool(netip.MustParseAddr("127.0.0.221"), netip.MustParseAddr("127.0.0.240")); err != nil {
		t.Fatal(err)
	}
	cfg.Backoff = Backoff{Initial: time.Second, Max: time.Second, Reset: time.Minute}
	cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	k, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return cfg
}

// TestClaimsGetAPreBoundVolumeAndLoseTheirDataWithTheClaim pins the
// provisioner: an unbound claim gets a PersistentVolume pre-bound to it
// whose hostPath is the claim's directory; deleting the claim removes the
// volume and the directory, so a claim created again starts empty.
func TestClaimsGetAPreBoundVolumeAndLoseTheirDataWithTheClaim(t *testing.T) {
	cs := startAPIServer(t)
	cfg := runKubelet(t, cs, Config{ProvisionVolumes: true})
	ctx := context.Background()

	pvc, err := cs.CoreV1().PersistentVolumeClaims("default").Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data-0", Namespace: "default"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("2Gi")}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := ClaimDir(cfg.RootDir, "default", "data-0", pvc.UID)
	var pv *corev1.PersistentVolume
	eventually(t, "a pre-bound volume", 30*time.Second, func() (bool, string) {
		pv, err = cs.CoreV1().PersistentVolumes().Get(ctx, volumeName(pvc), metav1.GetOptions{})
		return err == nil, errString(err)
	})
	if ref := pv.Spec.ClaimRef; ref == nil || ref.UID != pvc.UID || ref.Name != "data-0" {
		t.Errorf("claimRef = %+v, want the claim", ref)
	}
	if hp := pv.Spec.HostPath; hp == nil || hp.Path != dir {
		t.Errorf("hostPath = %+v, want %s", hp, dir)
	}
	if got := pv.Spec.Capacity[corev1.ResourceStorage]; got.Cmp(resource.MustParse("2Gi")) != 0 {
		t.Errorf("capacity = %s, want the requested 2Gi", got.String())
	}

	// A pod would have created the directory and written data there.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().PersistentVolumeClaims("default").Delete(ctx, "data-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// No PVC-protection controller runs beside this API server: drop the
	// finalizer its admission plugin added.
	eventually(t, "claim deleted", 30*time.Second, func() (bool, string) {
		p, err := cs.CoreV1().PersistentVolumeClaims("default").Get(ctx, "data-0", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err == nil && len(p.Finalizers) > 0 {
			p.Finalizers = nil
			_, err = cs.CoreV1().PersistentVolumeClaims("default").Update(ctx, p, metav1.UpdateOptions{})
		}
		return false, errString(err)
	})
	// The volume's deletion is requested; without the PV-protection
	// controller here, its finalizer keeps the object.
	eventually(t, "directory removed and volume deleted", 30*time.Second, func() (bool, string) {
		_, statErr := os.Stat(dir)
		got, getErr := cs.CoreV1().PersistentVolumes().Get(ctx, volumeName(pvc), metav1.GetOptions{})
		deleted := apierrors.IsNotFound(getErr) || (getErr == nil && got.DeletionTimestamp != nil)
		return os.IsNotExist(statErr) && deleted, "dir: " + errString(statErr) + "; pv: " + errString(getErr)
	})
}

// TestPodWaitsForAMissingConfigMapAndSaysWhy pins that a pod whose
// ConfigMap volume is missing reports ContainerCreating with the reason,
// and starts once the ConfigMap exists.
func TestPodWaitsForAMissingConfigMapAndSaysWhy(t *testing.T) {
	cs := startAPIServer(t)
	runKubelet(t, cs, Config{})
	ctx := context.Background()
	port := freePort(t)
	_, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "waits", Namespace: "default"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name: "main", Image: "example.com/helper",
				Env: []corev1.EnvVar{
					{Name: helperEnv, Value: "serve"},
					{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
					{Name: "PORT", Value: itoa(port)},
				},
				VolumeMounts: []corev1.VolumeMount{{Name: "cfg", MountPath: "/etc/cfg"}},
			}},
			Volumes: []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "later"},
			}}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "ContainerCreating naming the ConfigMap", 30*time.Second, func() (bool, string) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "waits", metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Waiting == nil {
			return false, errString(err)
		}
		w := p.Status.ContainerStatuses[0].State.Waiting
		return w.Reason == "ContainerCreating" && strings.Contains(w.Message, `configmap "later"`), w.Message
	})
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "later", Namespace: "default"}, Data: map[string]string{"k": "v"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "running once the ConfigMap exists", 30*time.Second, func() (bool, string) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "waits", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning, string(p.Status.Phase)
	})
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
