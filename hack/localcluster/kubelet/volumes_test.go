package kubelet

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
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
