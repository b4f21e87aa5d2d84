// Command mesh-node is the process each MeshCluster pod runs.
//
// TODO(issue 7): this is the placeholder of the foundation issue: it loads
// and validates the configuration, serves /healthz and /readyz on the admin
// port and stops cleanly on SIGTERM. The engine, admin and data APIs come
// with the node issue.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	nodeconfig "github.com/purplerain/mesh-operator/node/config"
)

func main() {
	var (
		configPath string
		adminAddr  string
	)
	flag.StringVar(&configPath, "config", "", "path of the node configuration file (required)")
	flag.StringVar(&adminAddr, "admin-addr", net.JoinHostPort(os.Getenv("POD_IP"), strconv.Itoa(nodeconfig.AdminPort)), "address of the admin API")
	flag.Parse()

	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(configPath, adminAddr, logger); err != nil {
		logger.Error("mesh-node stopped", "err", err)
		os.Exit(1)
	}
}

func run(configPath, adminAddr string, logger *slog.Logger) error {
	if configPath == "" {
		return errors.New("--config is required")
	}
	cfg, err := nodeconfig.Load(configPath)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }
	mux.HandleFunc("GET /healthz", ok)
	mux.HandleFunc("GET /readyz", ok)
	srv := &http.Server{Addr: adminAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	ln, err := net.Listen("tcp", adminAddr)
	if err != nil {
		return fmt.Errorf("listen on admin address: %w", err)
	}
	logger.Info("mesh-node started", "cluster", cfg.Cluster, "admin", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		return fmt.Errorf("admin server: %w", err)
	case <-ctx.Done():
	}
	logger.Info("mesh-node stopping on signal")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("stop admin server: %w", err)
	}
	logger.Info("mesh-node stopped cleanly")
	return nil
}
