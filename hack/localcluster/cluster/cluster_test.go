package cluster

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartRefusesATakenPortBeforeStartingAnything(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	state := t.TempDir()
	for name, o := range map[string]Options{
		"apiserver": {StateDir: state, AssetsDir: state, APIServerPort: port},
		"etcd":      {StateDir: state, AssetsDir: state, EtcdPort: port},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := Start(context.Background(), o)
			if !errors.Is(err, ErrPortTaken) || c != nil {
				t.Fatalf("Start = %v, %v; want ErrPortTaken", c, err)
			}
			if _, err := os.Stat(filepath.Join(state, "logs")); !os.IsNotExist(err) {
				t.Errorf("Start created state before refusing: %v", err)
			}
		})
	}
}

func TestStartNamesMissingBinaries(t *testing.T) {
	_, err := Start(context.Background(), Options{StateDir: t.TempDir(), AssetsDir: t.TempDir()})
	if err == nil {
		t.Fatal("Start succeeded without binaries")
	}
	if want := "make k8s-binaries"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say how to build the binaries (%q)", err, want)
	}
}
