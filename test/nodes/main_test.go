package nodes

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// meshNode is the mesh-node binary built for this run.
var meshNode string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mesh-node-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	meshNode = filepath.Join(dir, "mesh-node")
	// Built without -race even when the test binary has it: the nodes are
	// the system under test, not the race detector's subject here, and
	// four race-instrumented nodes would not fit the time budget.
	cmd := exec.Command("go", "build", "-o", meshNode, "github.com/purplerain/mesh-operator/cmd/mesh-node")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build mesh-node: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}
