package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testTag = "registry.example/mesh/hello:v1.2.3"

// staticHello builds a small static program that prints a greeting.
func staticHello(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte("package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello from the image\") }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "hello")
	cmd := exec.Command("go", "build", "-o", bin, src)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=", "GO111MODULE=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func archive(t *testing.T, s Spec) []byte {
	t.Helper()
	img, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteArchive(&buf, s.Tag, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// untar extracts a tar into dir and returns the names in order.
func untar(t *testing.T, r io.Reader, dir string) map[string]*tar.Header {
	t.Helper()
	headers := map[string]*tar.Header{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return headers
		}
		if err != nil {
			t.Fatal(err)
		}
		headers[h.Name] = h
		dst := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, data, os.FileMode(h.Mode).Perm()|0o200); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestArchiveIsAnOCILayoutAndADockerArchiveOfARunnableNonRootImage(t *testing.T) {
	spec := Spec{Tag: testTag, Files: []File{{Source: staticHello(t), Path: "/usr/local/bin/hello", Mode: 0o755}},
		Entrypoint: "/usr/local/bin/hello", Platform: "linux/" + runtime.GOARCH}
	data := archive(t, spec)
	dir := t.TempDir()
	untar(t, bytes.NewReader(data), dir)

	// OCI tools read the layout.
	index, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("not an OCI image layout: %v", err)
	}
	im, err := index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Annotations["io.containerd.image.name"] != testTag ||
		im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "v1.2.3" {
		t.Fatalf("index.json does not name the image %s: %+v", testTag, im.Manifests)
	}
	img, err := index.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "65532:65532" {
		t.Errorf("user %q, want the non-root 65532:65532", cfg.Config.User)
	}
	if len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/usr/local/bin/hello" {
		t.Errorf("entrypoint %v", cfg.Config.Entrypoint)
	}
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s", cfg.OS, cfg.Architecture)
	}

	// Docker reads manifest.json, which must name the same image.
	tag, err := name.NewTag(testTag)
	if err != nil {
		t.Fatal(err)
	}
	archivePath := filepath.Join(t.TempDir(), "image.tar")
	if err := os.WriteFile(archivePath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	dockerImg, err := tarball.ImageFromPath(archivePath, &tag)
	if err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	want, _ := img.ConfigName()
	got, err := dockerImg.ConfigName()
	if err != nil || got != want {
		t.Fatalf("manifest.json names config %v (%v), the OCI manifest %v", got, err, want)
	}

	// The root filesystem holds the program, runnable, and the non-root user.
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %v, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	rootfs := t.TempDir()
	headers := untar(t, rc, rootfs)
	if h := headers["usr/local/bin/hello"]; h == nil || h.Mode != 0o755 || h.Uid != 0 {
		t.Fatalf("usr/local/bin/hello: %+v", h)
	}
	passwd, err := os.ReadFile(filepath.Join(rootfs, "etc", "passwd"))
	if err != nil || !strings.Contains(string(passwd), "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd lacks the nonroot user: %q %v", passwd, err)
	}
	if h := headers["tmp/"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("tmp/: %+v", h)
	}
	out, err := exec.Command(filepath.Join(rootfs, "usr", "local", "bin", "hello")).CombinedOutput()
	if err != nil || string(out) != "hello from the image\n" {
		t.Fatalf("running the image's program: %q, %v", out, err)
	}
}

func TestSameInputsGiveTheSameArchive(t *testing.T) {
	spec := Spec{Tag: testTag, Files: []File{{Source: staticHello(t), Path: "/hello", Mode: 0o755}},
		Entrypoint: "/hello", Platform: "linux/" + runtime.GOARCH}
	if a, b := archive(t, spec), archive(t, spec); !bytes.Equal(a, b) {
		t.Fatal("two builds of the same inputs differ: the archive is not reproducible")
	}
}

func TestRefusesWhatCouldNotRun(t *testing.T) {
	hello := staticHello(t)
	dynamic, err := exec.LookPath("ls")
	if err != nil {
		t.Fatal(err)
	}
	other := "linux/arm64"
	if runtime.GOARCH == "arm64" {
		other = "linux/amd64"
	}
	cases := []struct {
		name string
		spec Spec
		want string
	}{
		{"dynamically linked binary", Spec{Tag: testTag, Files: []File{{Source: dynamic, Path: "/ls", Mode: 0o755}}, Entrypoint: "/ls", Platform: "linux/" + runtime.GOARCH}, "dynamically linked"},
		{"binary for another machine", Spec{Tag: testTag, Files: []File{{Source: hello, Path: "/hello", Mode: 0o755}}, Entrypoint: "/hello", Platform: other}, "binary is for"},
		{"entrypoint not in the image", Spec{Tag: testTag, Files: []File{{Source: hello, Path: "/hello", Mode: 0o755}}, Entrypoint: "/manager", Platform: "linux/" + runtime.GOARCH}, "is not one of the --file destinations"},
		{"bad tag", Spec{Tag: "Not A Tag", Files: []File{{Source: hello, Path: "/hello", Mode: 0o755}}, Entrypoint: "/hello", Platform: "linux/" + runtime.GOARCH}, "tag"},
		{"unknown platform", Spec{Tag: testTag, Files: []File{{Source: hello, Path: "/hello", Mode: 0o755}}, Entrypoint: "/hello", Platform: "windows/amd64"}, "platform"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Build(c.spec)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Build: %v, want an error containing %q", err, c.want)
			}
		})
	}
	if _, err := Build(cases[0].spec); !errors.Is(err, ErrNotStatic) {
		t.Errorf("a dynamic binary's error is %v, want ErrNotStatic", err)
	}
}
