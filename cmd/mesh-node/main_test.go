package main

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStartsServesProbesAndStopsOnSIGTERM runs the built binary as a real
// process, as a pod would.
func TestStartsServesProbesAndStopsOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "mesh-node")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "node.json")
	if err := os.WriteFile(cfg, []byte(`{"cluster":"demo","shards":4,"ackPolicy":"Leader","lease":"2s","storage":{"mode":"Memory","fsync":"Never"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)

	var logs strings.Builder
	cmd := exec.Command(bin, "--config="+cfg, "--admin-addr="+addr)
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

	for _, path := range []string{"/healthz", "/readyz"} {
		if err := waitOK("http://" + addr + path); err != nil {
			t.Fatalf("%s: %v\nlogs:\n%s", path, err, logs.String())
		}
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
	cfg := filepath.Join(dir, "node.json")
	if err := os.WriteFile(cfg, []byte(`{"cluster":"demo","shards":0,"ackPolicy":"Leader","lease":"2s","storage":{"mode":"Memory","fsync":"Never"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run(cfg, "127.0.0.1:0", nil)
	if err == nil || !strings.Contains(err.Error(), "shards: must be between 1 and 65535") {
		t.Fatalf("want an error naming shards, got %v", err)
	}
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
