// Package redistest runs a real redis-server on a free loopback port for
// tests and benchmarks. It never mocks Redis: without the binary, ForTest
// skips the test (or fails it when CI is set, so CI cannot go green by
// skipping).
package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Server is a running redis-server child process.
type Server struct {
	Addr string
	cmd  *exec.Cmd
	done chan error
}

// ErrNoBinary is returned by Start when redis-server is not on PATH.
var ErrNoBinary = errors.New("redistest: redis-server not found on PATH (install it with hack/test-deps.sh)")

// Start launches redis-server bound to 127.0.0.1 on a free port with
// persistence off (no RDB snapshots, no AOF) and its working directory in
// dir, and waits until it answers PING.
func Start(dir string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNoBinary
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s, err := launch(bin, dir, port)
		if err == nil {
			return s, nil
		}
		lastErr = err // most likely the port was taken in between; retry
	}
	return nil, lastErr
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("redistest: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func launch(bin, dir string, port int) (*Server, error) {
	cmd := exec.Command(bin,
		"--bind", "127.0.0.1", "--port", strconv.Itoa(port),
		"--save", "", "--appendonly", "no", "--dir", dir,
		"--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("redistest: start: %w", err)
	}
	s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), cmd: cmd, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()
	rdb := goredis.NewClient(&goredis.Options{Addr: s.Addr, MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return s, nil
		}
		select {
		case werr := <-s.done:
			return nil, fmt.Errorf("redistest: redis-server exited: %v (last ping: %w)", werr, err)
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("redistest: redis-server not answering on %s: %w", s.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server and waits for it to exit.
func (s *Server) Stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
	}
	<-s.done
}

// ForTest starts a server for t and stops it when t ends. Without
// redis-server it skips t, unless the CI environment variable is set, in
// which case it fails t.
func ForTest(t testing.TB) *Server {
	t.Helper()
	s, err := Start(t.TempDir())
	if errors.Is(err, ErrNoBinary) && os.Getenv("CI") == "" {
		t.Skip("redis-server not installed (run hack/test-deps.sh); skipping outside CI")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}
