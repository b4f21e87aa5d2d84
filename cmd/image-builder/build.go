package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// NonRoot is the user and group the image runs as, as in distroless's
// "nonroot" images.
const NonRoot = 65532

// ErrNotStatic is returned for a binary that needs a dynamic loader: the
// image has no libc, so it could not start.
var ErrNotStatic = errors.New("binary is dynamically linked: build it with CGO_ENABLED=0")

// File is one file copied into the image.
type File struct {
	Source string      // path on this machine
	Path   string      // absolute path in the image
	Mode   os.FileMode // permission bits
}

// Spec describes an image.
type Spec struct {
	Tag        string
	Files      []File
	Entrypoint string
	CABundle   string
	Platform   string    // "linux/amd64" or "linux/arm64"
	Created    time.Time // zero means the Unix epoch
}

var elfMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// Build assembles the image described by s.
func Build(s Spec) (v1.Image, error) {
	if _, err := name.NewTag(s.Tag); err != nil {
		return nil, fmt.Errorf("tag %q: %w", s.Tag, err)
	}
	osName, arch, ok := strings.Cut(s.Platform, "/")
	if !ok || osName != "linux" || elfMachine[arch] == 0 {
		return nil, fmt.Errorf("platform %q: want linux/amd64 or linux/arm64", s.Platform)
	}
	if len(s.Files) == 0 {
		return nil, errors.New("no --file given")
	}
	created := s.Created
	if created.IsZero() {
		created = time.Unix(0, 0).UTC()
	}
	entries := baseEntries()
	hasEntrypoint := false
	for _, f := range s.Files {
		data, err := os.ReadFile(f.Source)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f.Source, err)
		}
		if err := checkStatic(data, elfMachine[arch]); err != nil {
			return nil, fmt.Errorf("%s: %w", f.Source, err)
		}
		entries = append(entries, entry{path: f.Path, mode: int64(f.Mode.Perm()), data: data})
		hasEntrypoint = hasEntrypoint || f.Path == s.Entrypoint
	}
	if !hasEntrypoint {
		return nil, fmt.Errorf("entrypoint %q is not one of the --file destinations", s.Entrypoint)
	}
	if s.CABundle != "" {
		data, err := os.ReadFile(s.CABundle)
		if err != nil {
			return nil, fmt.Errorf("read CA bundle: %w", err)
		}
		entries = append(entries, entry{path: "/etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: data})
	}
	layerTar, err := tarEntries(entries, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: "image-builder: static binaries, passwd, group"},
	})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = osName, arch
	cfg.Created = v1.Time{Time: created}
	cfg.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", NonRoot, NonRoot),
		Entrypoint: []string{s.Entrypoint},
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		WorkingDir: "/",
		Labels: map[string]string{
			"org.opencontainers.image.source":  "https://github.com/purplerain/mesh-operator",
			"org.opencontainers.image.version": tagOf(s.Tag),
		},
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	return img, nil
}

// checkStatic refuses an ELF binary for another machine or one that asks
// for a dynamic loader (PT_INTERP).
func checkStatic(data []byte, machine elf.Machine) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("not an ELF binary: %w", err)
	}
	defer f.Close()
	if f.Machine != machine {
		return fmt.Errorf("binary is for %v, the image for %v", f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return ErrNotStatic
		}
	}
	return nil
}

func tagOf(ref string) string {
	t, err := name.NewTag(ref)
	if err != nil {
		return ""
	}
	return t.TagStr()
}

// entry is one file or directory of the layer.
type entry struct {
	path string
	mode int64
	dir  bool
	uid  int
	data []byte
}

func baseEntries() []entry {
	return []entry{
		{path: "/etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{path: "/etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{path: "/etc/nsswitch.conf", mode: 0o644, data: []byte("hosts: files dns\n")},
		{path: "/home/nonroot", mode: 0o700, dir: true, uid: NonRoot},
		{path: "/tmp", mode: 0o1777, dir: true},
	}
}

// tarEntries writes the entries, and every parent directory, sorted by
// path with fixed owners and times, so equal inputs give equal bytes.
func tarEntries(entries []entry, mtime time.Time) ([]byte, error) {
	all := map[string]entry{}
	for _, e := range entries {
		p := strings.TrimPrefix(path.Clean(e.path), "/")
		if _, dup := all[p]; dup {
			return nil, fmt.Errorf("%s added twice", e.path)
		}
		e.path = p
		all[p] = e
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := all[d]; !ok {
				all[d] = entry{path: d, mode: 0o755, dir: true}
			}
		}
	}
	paths := make([]string, 0, len(all))
	for p := range all {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		e := all[p]
		h := &tar.Header{Name: p, Mode: e.mode, Uid: e.uid, Gid: e.uid, ModTime: mtime, Format: tar.FormatPAX}
		if e.dir {
			h.Typeflag, h.Name = tar.TypeDir, p+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("tar %s: %w", p, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("tar: %w", err)
	}
	return buf.Bytes(), nil
}
