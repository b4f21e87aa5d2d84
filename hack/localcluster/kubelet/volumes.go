package kubelet

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// ErrUnsupportedVolume is returned for volume types the process kubelet
// cannot provide.
var ErrUnsupportedVolume = errors.New("unsupported volume type")

// dataLink is the symlink that makes a materialised volume's files change
// atomically: every visible file links through it to the current
// timestamped directory.
const dataLink = "..data"

// file is one file of a materialised volume.
type file struct {
	data []byte
	mode fs.FileMode
}

// volumeLayout says where a pod's volumes live on the host.
type volumeLayout struct {
	podDir string // removed with the pod
	// claimDir is the directory of a claim in the pod's namespace; it
	// survives pods.
	claimDir func(claim string) string
}

func (l volumeLayout) dir(pod *corev1.Pod, v *corev1.Volume) string {
	switch {
	case v.PersistentVolumeClaim != nil:
		return l.claimDir(v.PersistentVolumeClaim.ClaimName)
	case v.HostPath != nil:
		return v.HostPath.Path
	}
	return filepath.Join(l.podDir, "volumes", v.Name)
}

// volumeSources supplies what volume contents come from besides the pod.
type volumeSources interface {
	Objects
	// ServiceAccountToken returns a token of pod's service account for a
	// projection.
	ServiceAccountToken(pod *corev1.Pod, p *corev1.ServiceAccountTokenProjection) ([]byte, error)
	// Allocatable is the node's allocatable resources, which unset limits
	// default to in resourceFieldRef.
	Allocatable() corev1.ResourceList
}

// volumeFiles computes the files of a ConfigMap, Secret, downward API or
// projected volume; ok is false for directory volumes (emptyDir, PVC,
// hostPath). rewrite, when not nil, applies to ConfigMap file contents.
func volumeFiles(pod *corev1.Pod, v *corev1.Volume, objs volumeSources, rewrite func(string) string) (files map[string]file, ok bool, err error) {
	files = map[string]file{}
	switch {
	case v.EmptyDir != nil, v.PersistentVolumeClaim != nil, v.HostPath != nil:
		return nil, false, nil
	case v.ConfigMap != nil:
		err = addConfigMap(files, pod, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional, modeOr(v.ConfigMap.DefaultMode, 0o644), objs, rewrite)
	case v.Secret != nil:
		err = addSecret(files, pod, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional, modeOr(v.Secret.DefaultMode, 0o644), objs)
	case v.DownwardAPI != nil:
		err = addDownward(files, pod, v.DownwardAPI.Items, modeOr(v.DownwardAPI.DefaultMode, 0o644), objs.Allocatable())
	case v.Projected != nil:
		mode := modeOr(v.Projected.DefaultMode, 0o644)
		for _, s := range v.Projected.Sources {
			switch {
			case s.ConfigMap != nil:
				err = addConfigMap(files, pod, s.ConfigMap.Name, s.ConfigMap.Items, s.ConfigMap.Optional, mode, objs, rewrite)
			case s.Secret != nil:
				err = addSecret(files, pod, s.Secret.Name, s.Secret.Items, s.Secret.Optional, mode, objs)
			case s.DownwardAPI != nil:
				err = addDownward(files, pod, s.DownwardAPI.Items, mode, objs.Allocatable())
			case s.ServiceAccountToken != nil:
				var tok []byte
				if tok, err = objs.ServiceAccountToken(pod, s.ServiceAccountToken); err == nil {
					files[s.ServiceAccountToken.Path] = file{data: tok, mode: mode}
				}
			default:
				// TODO(issue 9): clusterTrustBundle and podCertificate
				// projections (beta APIs behind feature gates the local
				// cluster does not turn on). The cluster's CA comes as the
				// kube-root-ca.crt ConfigMap, which a configMap source
				// projects.
				err = fmt.Errorf("%w: projected source of volume %q", ErrUnsupportedVolume, v.Name)
			}
			if err != nil {
				break
			}
		}
	default:
		return nil, false, fmt.Errorf("%w: volume %q", ErrUnsupportedVolume, v.Name)
	}
	return files, true, err
}

func modeOr(m *int32, def fs.FileMode) fs.FileMode {
	if m == nil {
		return def
	}
	return fs.FileMode(*m)
}

func addConfigMap(files map[string]file, pod *corev1.Pod, name string, items []corev1.KeyToPath, optional *bool, mode fs.FileMode, objs Objects, rewrite func(string) string) error {
	cm, err := objs.ConfigMap(pod.Namespace, name)
	if err != nil {
		return ignoreIf(isOptional(optional), fmt.Errorf("configmap %q: %w", name, err))
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		if rewrite != nil {
			v = rewrite(v)
		}
		data[k] = []byte(v)
	}
	maps.Copy(data, cm.BinaryData)
	return addKeys(files, "configmap "+name, data, items, mode)
}

func addSecret(files map[string]file, pod *corev1.Pod, name string, items []corev1.KeyToPath, optional *bool, mode fs.FileMode, objs Objects) error {
	s, err := objs.Secret(pod.Namespace, name)
	if err != nil {
		return ignoreIf(isOptional(optional), fmt.Errorf("secret %q: %w", name, err))
	}
	return addKeys(files, "secret "+name, s.Data, items, mode)
}

func addKeys(files map[string]file, what string, data map[string][]byte, items []corev1.KeyToPath, mode fs.FileMode) error {
	if len(items) == 0 {
		for k, v := range data {
			files[k] = file{data: v, mode: mode}
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			return fmt.Errorf("%s has no key %q", what, it.Key)
		}
		files[it.Path] = file{data: v, mode: modeOr(it.Mode, mode)}
	}
	return nil
}

func addDownward(files map[string]file, pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, mode fs.FileMode, node corev1.ResourceList) error {
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = fieldValue(pod, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			v, err = volumeResourceValue(pod, it.ResourceFieldRef, node)
		default:
			err = errors.New("neither fieldRef nor resourceFieldRef")
		}
		if err != nil {
			return fmt.Errorf("downward API file %q: %w", it.Path, err)
		}
		files[it.Path] = file{data: []byte(v), mode: modeOr(it.Mode, mode)}
	}
	return nil
}

// volumeResourceValue is a resourceFieldRef of a downward API volume, which
// (unlike one in env) must name its container.
func volumeResourceValue(pod *corev1.Pod, ref *corev1.ResourceFieldSelector, node corev1.ResourceList) (string, error) {
	for i := range pod.Spec.Containers {
		if c := &pod.Spec.Containers[i]; c.Name == ref.ContainerName {
			return resourceValue(pod, c, ref, node)
		}
	}
	if ref.ContainerName == "" {
		return "", errors.New("resourceFieldRef: containerName is required in a volume")
	}
	return "", fmt.Errorf("resourceFieldRef: no container %q", ref.ContainerName)
}

// writeAtomic makes dir hold exactly files. The files are written into a
// new timestamped directory and the ..data symlink is swapped to it with a
// rename, so a reader sees either the old set or the new one. It reports
// whether anything changed.
func writeAtomic(dir string, files map[string]file, now time.Time) (bool, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	if same, err := sameFiles(dir, files); err != nil {
		return false, err
	} else if same {
		return false, nil
	}
	old, _ := os.Readlink(filepath.Join(dir, dataLink))
	tsDir, err := os.MkdirTemp(dir, now.UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return false, err
	}
	for p, f := range files {
		full := filepath.Join(tsDir, filepath.Clean("/"+p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return false, err
		}
		if err := os.WriteFile(full, f.data, 0o600); err != nil {
			return false, err
		}
		if err := os.Chmod(full, f.mode|0o200); err != nil { // owner keeps write so the pod dir can be removed
			return false, err
		}
	}
	tmpLink := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(filepath.Base(tsDir), tmpLink); err != nil {
		return false, err
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, dataLink)); err != nil {
		return false, err
	}
	// Top-level names link through ..data; stale ones go.
	want := map[string]bool{}
	for p := range files {
		want[strings.SplitN(filepath.Clean(p), string(filepath.Separator), 2)[0]] = true
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		if !want[e.Name()] {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	for top := range want {
		link := filepath.Join(dir, top)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join(dataLink, top), link); err != nil {
			return false, err
		}
	}
	if old != "" && old != filepath.Base(tsDir) {
		_ = os.RemoveAll(filepath.Join(dir, old))
	}
	return true, nil
}

func sameFiles(dir string, files map[string]file) (bool, error) {
	data := filepath.Join(dir, dataLink)
	if _, err := os.Stat(data); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	n := 0
	err := filepath.WalkDir(data+"/", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		rel, _ := filepath.Rel(data, p)
		f, ok := files[rel]
		if !ok {
			return errDiffers
		}
		got, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !bytes.Equal(got, f.data) || info.Mode().Perm() != (f.mode|0o200).Perm() {
			return errDiffers
		}
		return nil
	})
	if errors.Is(err, errDiffers) {
		return false, nil
	}
	return err == nil && n == len(files), err
}

var errDiffers = errors.New("differs")

// pathRewriter replaces mount paths with the host directories that stand
// in for them.
type pathRewriter struct {
	mounts []mountDir // longest mount path first
}

type mountDir struct{ mountPath, hostDir string }

func newPathRewriter(mounts map[string]string) *pathRewriter {
	r := &pathRewriter{}
	for _, mp := range slices.Collect(maps.Keys(mounts)) {
		r.mounts = append(r.mounts, mountDir{strings.TrimSuffix(mp, "/"), mounts[mp]})
	}
	sort.Slice(r.mounts, func(i, j int) bool {
		if len(r.mounts[i].mountPath) != len(r.mounts[j].mountPath) {
			return len(r.mounts[i].mountPath) > len(r.mounts[j].mountPath)
		}
		return r.mounts[i].mountPath < r.mounts[j].mountPath
	})
	return r
}

// Rewrite replaces every mount path in s that starts at a path boundary
// (start of string or a character that cannot be part of a path name) and
// ends at one ('/' or a non-name character).
func (r *pathRewriter) Rewrite(s string) string {
	if r == nil || len(r.mounts) == 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if i == 0 || !isPathChar(s[i-1]) {
			if m, ok := r.match(s, i); ok {
				b.WriteString(m.hostDir)
				i += len(m.mountPath)
				continue
			}
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

func (r *pathRewriter) match(s string, i int) (mountDir, bool) {
	for _, m := range r.mounts {
		if !strings.HasPrefix(s[i:], m.mountPath) {
			continue
		}
		end := i + len(m.mountPath)
		if end == len(s) || s[end] == '/' || !isNameChar(s[end]) {
			return m, true
		}
	}
	return mountDir{}, false
}

func isNameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
}

func isPathChar(c byte) bool { return isNameChar(c) || c == '/' }
