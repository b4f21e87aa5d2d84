package kubelet

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestPathRewriterReplacesMountPathsAtPathBoundaries(t *testing.T) {
	r := newPathRewriter(map[string]string{
		"/etc/mesh":                     "/s/pods/u/volumes/config",
		"/etc/mesh/adapter-credentials": "/s/pods/u/volumes/creds",
		"/var/lib/mesh/":                "/s/pvcs/ns/data-demo-0",
	})
	for in, want := range map[string]string{
		"--config=/etc/mesh/node.json":                  "--config=/s/pods/u/volumes/config/node.json",
		"/etc/mesh":                                     "/s/pods/u/volumes/config",
		"/etc/mesh/adapter-credentials/password":        "/s/pods/u/volumes/creds/password", // longest mount wins
		`{"dir":"/var/lib/mesh","creds":"/etc/mesh/x"}`: `{"dir":"/s/pvcs/ns/data-demo-0","creds":"/s/pods/u/volumes/config/x"}`,
		"/etc/meshy/file":                               "/etc/meshy/file",    // not the same directory
		"/opt/etc/mesh/file":                            "/opt/etc/mesh/file", // not at a path start
		"a:/etc/mesh,b:/var/lib/mesh/d":                 "a:/s/pods/u/volumes/config,b:/s/pvcs/ns/data-demo-0/d",
	} {
		if got := r.Rewrite(in); got != want {
			t.Errorf("Rewrite(%q) = %q, want %q", in, got, want)
		}
	}
}

func readVolumeFile(t *testing.T, dir, name string) (string, os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b), info.Mode().Perm()
}

func TestWriteAtomicSwapsTheWholeSetAndSkipsUnchanged(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	now := time.Unix(1_700_000_000, 0)
	changed, err := writeAtomic(dir, map[string]file{
		"node.json": {data: []byte(`{"a":1}`), mode: 0o444},
		"old.txt":   {data: []byte("old"), mode: 0o444},
	}, now)
	if err != nil || !changed {
		t.Fatalf("first write: changed=%v err=%v", changed, err)
	}
	if got, mode := readVolumeFile(t, dir, "node.json"); got != `{"a":1}` || mode != 0o644 {
		t.Errorf("node.json = %q mode %v", got, mode) // defaultMode 0444, plus owner write so the pod dir can be removed
	}
	if link, err := os.Readlink(filepath.Join(dir, "node.json")); err != nil || link != filepath.Join(dataLink, "node.json") {
		t.Errorf("node.json links to %q (%v), want through %s", link, err, dataLink)
	}
	first, _ := os.Readlink(filepath.Join(dir, dataLink))

	changed, err = writeAtomic(dir, map[string]file{
		"node.json": {data: []byte(`{"a":1}`), mode: 0o444},
		"old.txt":   {data: []byte("old"), mode: 0o444},
	}, now)
	if err != nil || changed {
		t.Fatalf("unchanged write: changed=%v err=%v", changed, err)
	}

	changed, err = writeAtomic(dir, map[string]file{"node.json": {data: []byte(`{"a":2}`), mode: 0o444}}, now.Add(time.Second))
	if err != nil || !changed {
		t.Fatalf("update: changed=%v err=%v", changed, err)
	}
	if got, _ := readVolumeFile(t, dir, "node.json"); got != `{"a":2}` {
		t.Errorf("after update node.json = %q", got)
	}
	if _, err := os.Lstat(filepath.Join(dir, "old.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a key removed from the source still exists: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, first)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the previous data directory %s was not removed: %v", first, err)
	}
}

func TestVolumeFilesConfigMapSecretDownwardAndProjected(t *testing.T) {
	objs := objectMap{
		configMaps: map[string]*corev1.ConfigMap{"cfg": {Data: map[string]string{
			"node.json": `{"storage":{"dir":"/var/lib/mesh"}}`, "other": "x",
		}}},
		secrets: map[string]*corev1.Secret{"creds": {Data: map[string][]byte{"password": []byte("pw")}}},
	}
	rewrite := newPathRewriter(map[string]string{"/var/lib/mesh": "/state/pvcs/ns1/data-demo-0"}).Rewrite
	mode := int32(0o400)
	pod := testPod()

	files, ok, err := volumeFiles(pod, &corev1.Volume{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"},
		Items:                []corev1.KeyToPath{{Key: "node.json", Path: "conf/node.json", Mode: &mode}},
	}}}, objs, rewrite)
	if err != nil || !ok {
		t.Fatalf("configmap: ok=%v err=%v", ok, err)
	}
	if f := files["conf/node.json"]; string(f.data) != `{"storage":{"dir":"/state/pvcs/ns1/data-demo-0"}}` || f.mode != 0o400 || len(files) != 1 {
		t.Errorf("configmap files = %v", files)
	}

	files, _, err = volumeFiles(pod, &corev1.Volume{Name: "p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
				{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
			}}},
		},
	}}}, objs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(files["password"].data) != "pw" || string(files["name"].data) != "demo-0" {
		t.Errorf("projected files = %v", files)
	}

	if _, _, err := volumeFiles(pod, &corev1.Volume{Name: "c", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "nope"}}}, objs, nil); err == nil {
		t.Error("a missing required secret gave no error")
	}
	if _, ok, err := volumeFiles(pod, &corev1.Volume{Name: "d", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}, objs, nil); ok || err != nil {
		t.Errorf("emptyDir: ok=%v err=%v, want a directory volume", ok, err)
	}
	if _, _, err := volumeFiles(pod, &corev1.Volume{Name: "n", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{}}}, objs, nil); !errors.Is(err, ErrUnsupportedVolume) {
		t.Errorf("nfs: err = %v, want ErrUnsupportedVolume", err)
	}
}

func TestBackoffDoublesToTheCap(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 5 * time.Second}
	for k, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second} {
		if got := b.Delay(k + 1); got != want {
			t.Errorf("Delay(%d) = %v, want %v", k+1, got, want)
		}
	}
}

// TestProjectedServiceAccountVolume materialises the volume the API
// server's ServiceAccount admission gives every pod (kube-api-access-*):
// the token, the cluster CA from kube-root-ca.crt and the namespace.
func TestProjectedServiceAccountVolume(t *testing.T) {
	objs := objectMap{
		configMaps: map[string]*corev1.ConfigMap{"kube-root-ca.crt": {Data: map[string]string{"ca.crt": "-----BEGIN CERTIFICATE-----\n"}}},
		tokens:     map[string]string{"sa/": "token-default-audience", "sa/vault": "token-for-vault"},
	}
	pod := testPod()
	exp := int64(3607)
	mode := int32(0o440)
	v := &corev1.Volume{Name: "kube-api-access-x", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		DefaultMode: &mode,
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &exp}},
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "vault/token", Audience: "vault"}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
				Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
				{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}},
			}}},
		},
	}}}
	files, ok, err := volumeFiles(pod, v, objs, nil)
	if err != nil || !ok {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	for path, want := range map[string]string{
		"token": "token-default-audience", "vault/token": "token-for-vault",
		"ca.crt": "-----BEGIN CERTIFICATE-----\n", "namespace": "ns1",
	} {
		if f := files[path]; string(f.data) != want || f.mode != 0o440 {
			t.Errorf("%s = %q mode %v, want %q mode 0440", path, f.data, f.mode, want)
		}
	}

	// A token the API server refuses (no such service account) fails the
	// volume, so the pod waits and says why.
	pod.Spec.ServiceAccountName = "missing"
	if _, _, err := volumeFiles(pod, v, objs, nil); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("token of a missing service account: err = %v", err)
	}
}

func TestDownwardAPIVolumeResourceFields(t *testing.T) {
	objs := objectMap{node: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("16Gi")}}
	pod := testPod()
	pod.Spec.Containers = []corev1.Container{
		{Name: "sidecar"},
		{Name: "mesh-node", Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("100Mi")},
		}},
	}
	ref := func(res, divisor string) *corev1.ResourceFieldSelector {
		r := &corev1.ResourceFieldSelector{ContainerName: "mesh-node", Resource: res}
		if divisor != "" {
			r.Divisor = resource.MustParse(divisor)
		}
		return r
	}
	v := &corev1.Volume{Name: "res", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
		{Path: "cpu_request_millis", ResourceFieldRef: ref("requests.cpu", "1m")},
		{Path: "cpu_request", ResourceFieldRef: ref("requests.cpu", "")}, // rounded up to whole CPUs
		{Path: "mem_limit_mib", ResourceFieldRef: ref("limits.memory", "1Mi")},
		{Path: "cpu_limit", ResourceFieldRef: ref("limits.cpu", "")},        // unset: the node's allocatable
		{Path: "mem_request", ResourceFieldRef: ref("requests.memory", "")}, // bytes
		{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
	}}}}
	files, _, err := volumeFiles(pod, v, objs, nil)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"cpu_request_millis": "250", "cpu_request": "1", "mem_limit_mib": "100", "cpu_limit": "8",
		"mem_request": "67108864", "name": "demo-0",
	} {
		if got := string(files[path].data); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}

	for name, r := range map[string]*corev1.ResourceFieldSelector{
		"no container name": {Resource: "limits.memory"},
		"unknown container": {ContainerName: "nope", Resource: "limits.memory"},
		"unknown resource":  {ContainerName: "mesh-node", Resource: "limits.gpu"},
	} {
		v := &corev1.Volume{Name: "bad", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{{Path: "x", ResourceFieldRef: r}}}}}
		if _, _, err := volumeFiles(pod, v, objs, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
