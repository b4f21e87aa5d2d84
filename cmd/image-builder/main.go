// Command image-builder builds a container image from static binaries,
// without Docker or any container engine, and writes it as an OCI image
// archive: an OCI image layout (oci-layout, index.json, blobs/) in a tar,
// with a Docker-compatible manifest.json beside it, so `docker load`,
// `podman load`, `skopeo copy oci-archive:` and `kind load image-archive`
// all accept it.
//
// The image is distroless-style: one layer holding the binaries, an
// /etc/passwd and /etc/group with the non-root user 65532 ("nonroot"), an
// optional CA bundle, and nothing else: no shell, no package manager. It
// runs as 65532:65532. Every timestamp is the Unix epoch (or
// SOURCE_DATE_EPOCH), so the same inputs always give the same digest.
//
// Usage:
//
//	image-builder --tag ghcr.io/purplerain/mesh-operator:v0.1.0 \
//	  --file bin/static/manager:/manager --entrypoint /manager \
//	  --output bin/images/mesh-operator-v0.1.0.tar
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// fileFlags collects repeated --file src:dst flags.
type fileFlags []File

func (f *fileFlags) String() string { return fmt.Sprint(*f) }

func (f *fileFlags) Set(v string) error {
	src, dst, ok := strings.Cut(v, ":")
	if !ok || src == "" || !strings.HasPrefix(dst, "/") {
		return fmt.Errorf("want SRC:/absolute/DST, got %q", v)
	}
	*f = append(*f, File{Source: src, Path: dst, Mode: 0o755})
	return nil
}

func main() {
	var (
		spec   Spec
		files  fileFlags
		output string
	)
	flag.StringVar(&spec.Tag, "tag", "", "image reference to record in the archive, e.g. ghcr.io/purplerain/mesh-operator:v0.1.0 (required)")
	flag.Var(&files, "file", "SRC:/DST: copy the static binary SRC to /DST in the image, mode 0755 (repeatable)")
	flag.StringVar(&spec.Entrypoint, "entrypoint", "", "absolute path of the program the image runs (required)")
	flag.StringVar(&spec.CABundle, "ca-bundle", "", "PEM file installed as /etc/ssl/certs/ca-certificates.crt (optional)")
	flag.StringVar(&spec.Platform, "platform", "linux/"+runtime.GOARCH, "OS/ARCH of the binaries (linux/amd64 or linux/arm64)")
	flag.StringVar(&output, "output", "", "path of the OCI image archive to write (required)")
	flag.Parse()
	spec.Files = files
	if epoch := os.Getenv("SOURCE_DATE_EPOCH"); epoch != "" {
		sec, err := strconv.ParseInt(epoch, 10, 64)
		if err != nil {
			fatal(fmt.Errorf("SOURCE_DATE_EPOCH: %w", err))
		}
		spec.Created = time.Unix(sec, 0).UTC()
	}
	if output == "" {
		fatal(fmt.Errorf("--output is required"))
	}
	img, err := Build(spec)
	if err != nil {
		fatal(err)
	}
	if err := WriteArchiveFile(output, spec.Tag, img); err != nil {
		fatal(err)
	}
	digest, err := img.Digest()
	if err != nil {
		fatal(err)
	}
	fmt.Printf("wrote %s (%s@%s)\n", output, spec.Tag, digest)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "image-builder:", err)
	os.Exit(1)
}
