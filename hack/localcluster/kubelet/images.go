package kubelet

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrImageNotMapped is returned when a container's image has no local
// binary.
var ErrImageNotMapped = errors.New("image not mapped to a local binary")

// ImageMap maps image repositories (the image reference without tag or
// digest, e.g. "ghcr.io/purplerain/mesh-node") to the local binary that
// stands in for the image's entrypoint.
type ImageMap map[string]string

// ParseImageMapping parses "repository=path".
func ParseImageMapping(s string) (repo, binary string, err error) {
	repo, binary, ok := strings.Cut(s, "=")
	if !ok || repo == "" || binary == "" {
		return "", "", fmt.Errorf("image mapping %q: want repository=path", s)
	}
	return ImageRepository(repo), binary, nil
}

// Resolve returns the binary for image.
func (m ImageMap) Resolve(image string) (string, error) {
	if bin, ok := m[ImageRepository(image)]; ok {
		return bin, nil
	}
	return "", fmt.Errorf("%w: %q (known: %s)", ErrImageNotMapped, image, strings.Join(m.repositories(), ", "))
}

func (m ImageMap) repositories() []string {
	out := make([]string, 0, len(m))
	for r := range m {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// ImageRepository strips the tag and digest from an image reference. A
// colon before the last slash belongs to a registry port, not a tag.
func ImageRepository(image string) string {
	if i := strings.IndexByte(image, '@'); i >= 0 {
		image = image[:i]
	}
	slash := strings.LastIndexByte(image, '/')
	if i := strings.LastIndexByte(image, ':'); i > slash {
		image = image[:i]
	}
	return image
}
