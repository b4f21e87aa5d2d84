package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node/runtime"
)

// TestStartsServesProbesAndStopsOnSIGTERM runs the built binary as a real
// process, as a pod would.
func TestStartsServesProbesAndStopsOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "mesh-node")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cfg := writeConfig(t, dir, 4)
	addr := freeAddr(t)

	var logs strings.Builder
	cmd := exec.Command(bin, "--config="+cfg, "--name=demo-0", "--admin-addr="+addr, "--data-addr="+freeAddr(t), "--wire-addr="+freeAddr(t))
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})

	if err := waitOK("http://" + addr + "/healthz"); err != nil {
		t.Fatalf("/healthz: %v\nlogs:\n%s", err, logs.String())
	}
	// Not ready until the operator pushed a topology.
	if resp, err := http.Get("http://" + addr + "/readyz"); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz without topology: %v %v", resp, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err // let the cleanup's receive return
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\nlogs:\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("did not stop within 15s of SIGTERM\nlogs:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "mesh-node stopped cleanly") {
		t.Fatalf("no clean-stop log line:\n%s", logs.String())
	}
}

func TestRejectsInvalidConfigNamingTheField(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, 0)
	err := run(cfg, runtime.Options{Name: "demo-0"})
	if err == nil || !strings.Contains(err.Error(), "shards: must be between 1 and 65535") {
		t.Fatalf("want an error naming shards, got %v", err)
	}
}

// writeConfig writes a node configuration with freshly generated keys.
func writeConfig(t *testing.T, dir string, shards int) string {
	t.Helper()
	op, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	cluster, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := op.MarshalPublicKeyPEM()
	priv, _ := cluster.MarshalPrivateKeyPEM()
	for name, data := range map[string][]byte{"operator.pub": pub, "cluster.key": priv} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "node.json")
	doc := fmt.Sprintf(`{"cluster":"demo","shards":%d,"ackPolicy":"Leader","lease":"2s","storage":{"mode":"Memory","fsync":"Never"},
		"credentials":{"operatorPublicKey":%q,"clusterKey":%q}}`, shards, filepath.Join(dir, "operator.pub"), filepath.Join(dir, "cluster.key"))
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitOK(url string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = &net.AddrError{Err: "status " + resp.Status, Addr: url}
			}
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
