package cluster

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// PIDFile lists the processes a cluster started ("pid exe" per line), so
// that `localcluster down` can stop them even when the process that
// started them died without cleaning up (etcd and kube-apiserver are
// started by envtest in their own process group, without a parent-death
// signal).
func PIDFile(stateDir string) string { return filepath.Join(stateDir, "pids") }

// recordChildren writes the current children of this process to the pid
// file.
func recordChildren(stateDir string) error {
	self := os.Getpid()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := parentOf(pid); !ok || ppid != self {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "%d %s\n", pid, exe)
	}
	return os.WriteFile(PIDFile(stateDir), []byte(b.String()), 0o644)
}

func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// pid (comm) state ppid ...; comm may contain spaces, so split after ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}

// KillRecorded stops the processes of the pid file that still run the
// recorded executable: SIGTERM, then SIGKILL after grace. It returns the
// pids it signalled and removes the file.
func KillRecorded(stateDir string, grace time.Duration) ([]int, error) {
	f, err := os.Open(PIDFile(stateDir))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var live []int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pidStr, exe, ok := strings.Cut(sc.Text(), " ")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil {
			continue
		}
		// The pid may have been reused by another program: only signal it
		// when it still runs the same executable.
		if cur, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && cur == exe {
			_ = syscall.Kill(pid, syscall.SIGTERM)
			live = append(live, pid)
		}
	}
	deadline := time.Now().Add(grace)
	for _, pid := range live {
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if syscall.Kill(pid, 0) == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	_ = os.Remove(PIDFile(stateDir))
	return live, sc.Err()
}
