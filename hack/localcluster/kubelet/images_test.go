package kubelet

import (
	"errors"
	"testing"
)

func TestImageRepository(t *testing.T) {
	for in, want := range map[string]string{
		"ghcr.io/purplerain/mesh-node:v0.1.0":           "ghcr.io/purplerain/mesh-node",
		"ghcr.io/purplerain/mesh-node":                  "ghcr.io/purplerain/mesh-node",
		"localhost:5000/mesh-node:dev":                  "localhost:5000/mesh-node",
		"localhost:5000/mesh-node":                      "localhost:5000/mesh-node",
		"mesh-node@sha256:0123":                         "mesh-node",
		"ghcr.io/purplerain/mesh-node:v1@sha256:abcdef": "ghcr.io/purplerain/mesh-node",
	} {
		if got := ImageRepository(in); got != want {
			t.Errorf("ImageRepository(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestImageMapResolvesAnyTagOfAMappedRepository(t *testing.T) {
	repo, bin, err := ParseImageMapping("ghcr.io/purplerain/mesh-node:ignored=/opt/bin/mesh-node")
	if err != nil {
		t.Fatal(err)
	}
	m := ImageMap{repo: bin}
	for _, img := range []string{"ghcr.io/purplerain/mesh-node:v0.1.0", "ghcr.io/purplerain/mesh-node:e2e"} {
		if got, err := m.Resolve(img); err != nil || got != "/opt/bin/mesh-node" {
			t.Errorf("Resolve(%q) = %q, %v", img, got, err)
		}
	}
	if _, err := m.Resolve("docker.io/library/redis:7"); !errors.Is(err, ErrImageNotMapped) {
		t.Errorf("unmapped image: err = %v, want ErrImageNotMapped", err)
	}
	if _, _, err := ParseImageMapping("no-equals-sign"); err == nil {
		t.Error("ParseImageMapping accepted a mapping without '='")
	}
}
