// Command mesh-node is the process each MeshCluster pod runs: the mesh
// node runtime (package node/runtime) configured from the file the
// operator mounts and the pod's own name and address.
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/runtime"
)

func main() {
	host := os.Getenv("POD_IP")
	addr := func(port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
	var o runtime.Options
	var configPath string
	flag.StringVar(&configPath, "config", "", "path of the node configuration file (required)")
	flag.StringVar(&o.Name, "name", os.Getenv("POD_NAME"), "the node's member name (default $POD_NAME)")
	flag.StringVar(&o.AdminAddr, "admin-addr", addr(nodeconfig.AdminPort), "address of the admin API")
	flag.StringVar(&o.DataAddr, "data-addr", addr(nodeconfig.DataPort), "address of the data API")
	flag.StringVar(&o.WireAddr, "wire-addr", addr(nodeconfig.WirePort), "address of the replication port")
	flag.DurationVar(&o.DrainTimeout, "drain-timeout", 20*time.Second, "how long the shutdown drain may take")
	flag.Parse()

	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	o.Logger = logger
	if err := run(configPath, o); err != nil {
		logger.Error("mesh-node stopped", "err", err)
		os.Exit(1)
	}
}

func run(configPath string, o runtime.Options) error {
	if configPath == "" {
		return errors.New("--config is required")
	}
	if o.Name == "" {
		return errors.New("--name (or $POD_NAME) is required")
	}
	cfg, err := nodeconfig.Load(configPath)
	if err != nil {
		return err
	}
	o.Config = cfg
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return runtime.Run(ctx, o)
}
