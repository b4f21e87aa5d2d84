package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/purplerain/mesh-operator/engine/subnet"
)

// The downward API writes one key="value" a line, values Go-quoted.
func TestParseLabelsReadsTheDownwardAPIFormat(t *testing.T) {
	got, err := ParseLabels([]byte("app.kubernetes.io/name=\"mesh-node\"\nmesh.example/region=\"eu \\\"west\\\"\"\n\nempty=\"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"app.kubernetes.io/name": "mesh-node", "mesh.example/region": `eu "west"`, "empty": ""}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	for _, bad := range []string{"novalue\n", "k=unquoted\n", "=\"v\"\n", "k=\"open\n"} {
		if _, err := ParseLabels([]byte(bad)); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func TestAssignFromTheLabelsFile(t *testing.T) {
	dir := t.TempDir()
	labels := filepath.Join(dir, "labels")
	if err := os.WriteFile(labels, []byte("region=\"eu\"\nfleet=\"trucks\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &Subnets{LabelsFile: labels, Policy: []subnet.Rule{
		{Label: "region", Level: 0, Values: map[string]uint8{"eu": 3, "us": 4}},
		{Label: "fleet", Level: 1, Values: map[string]uint8{"trucks": 7}},
	}}
	id, err := s.Assign()
	if err != nil || id.String() != "3.7" {
		t.Fatalf("Assign = %v, %v; want 3.7", id, err)
	}

	// A policy whose labels leave a gap (fleet set, region unknown) is an
	// error naming the cause, not a panic or a wrong id.
	if err := os.WriteFile(labels, []byte("region=\"mars\"\nfleet=\"trucks\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Assign(); err == nil || !strings.Contains(err.Error(), "unspecified") {
		t.Fatalf("gap: want an error, got %v", err)
	}
	s.LabelsFile = filepath.Join(dir, "missing")
	if _, err := s.Assign(); err == nil || !strings.Contains(err.Error(), "subnets.labelsFile") {
		t.Fatalf("missing file: want an error naming subnets.labelsFile, got %v", err)
	}
	// No labels file: no labels, the global subnet.
	s.LabelsFile = ""
	if id, err := s.Assign(); err != nil || id != subnet.Global {
		t.Fatalf("no labels: got %v, %v", id, err)
	}
}
