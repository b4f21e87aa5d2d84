// Package runtime runs a mesh node as a process: it loads the keys the
// operator mounted, starts the node, its replication server and its three
// listeners (admin, data, wire), sweeps retention, and on shutdown drains:
// it stops accepting writes, flushes what it accepted, gives followers a
// bounded time to catch up, and logs loudly whatever it could not flush or
// replicate.
package runtime

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/rules"
	"github.com/purplerain/mesh-operator/node"
	"github.com/purplerain/mesh-operator/node/adminapi"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/replication"
	"github.com/purplerain/mesh-operator/node/wireapi"
)

// Options configures a node process.
type Options struct {
	Config *nodeconfig.Config
	// Name is the node's member name (the pod name).
	Name string
	// Listen addresses of the admin, data and wire (replication) ports.
	AdminAddr, DataAddr, WireAddr string
	// RetentionInterval is how often retention is swept. Default 1s.
	RetentionInterval time.Duration
	// DrainTimeout bounds the shutdown drain (keep it under the pod's
	// termination grace period). Default 20s.
	DrainTimeout time.Duration
	Logger       *slog.Logger
	// Ready, if set, is called with the bound addresses once every
	// listener is up.
	Ready func(admin, data, wire net.Addr)
	// DaemonKinds builds the declared daemons; nil means the built-in
	// kinds. Tests and embedders register their own kinds here.
	DaemonKinds *compute.Kinds
}

// Run runs the node until ctx ends, then drains and stops. The error is
// nil after a clean drain.
func Run(ctx context.Context, o Options) error {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.RetentionInterval <= 0 {
		o.RetentionInterval = time.Second
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 20 * time.Second
	}
	log := o.Logger.With("node", o.Name, "cluster", o.Config.Cluster)

	operatorKey, clusterKey, err := loadKeys(o.Config.Credentials)
	if err != nil {
		return err
	}
	ruleSet, err := rules.Compile(o.Config.Rules)
	if err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	nodeOpts := node.Options{Name: o.Name, Config: o.Config, ClusterKey: clusterKey, Rules: ruleSet, Logger: log, DaemonKinds: o.DaemonKinds}
	if s := o.Config.Subnets; s != nil {
		// A failed assignment (unreadable labels, a label value leaving a
		// gap between levels) is reported, not fatal: nothing filters by
		// subnet yet, so the node can serve without one.
		if id, err := s.Assign(); err != nil {
			log.Error("subnet not assigned", "err", err)
			nodeOpts.SubnetError = err
		} else {
			nodeOpts.Subnet = &id
			log.Info("subnet assigned from pod labels", "subnet", id.String())
		}
	}
	n, err := node.New(nodeOpts)
	if err != nil {
		return err
	}
	// The admin API replaces the verifiers' trusted keys on a credential
	// rotation (no restart).
	replVerifier := identity.NewVerifier([]ed25519.PublicKey{clusterKey.PublicKey()})
	repl, err := replication.NewServer(replication.ServerOptions{
		Source:   n.OwnerSource(),
		Verifier: replVerifier,
		Logger:   log,
		// Followers seal their connections (wire sessions); the owner signs
		// the handshake with its current cluster key.
		SessionKey:    n.ClusterKey,
		RequireSealed: true,
	})
	if err != nil {
		_ = n.Close()
		return err
	}
	n.SetReplicas(repl)

	registry := prometheus.NewRegistry()
	registry.MustRegister(n.NewCollector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	admin, err := adminapi.New(adminapi.Options{
		Node:     n,
		Verifier: identity.NewVerifier([]ed25519.PublicKey{operatorKey}),
		// A credential rotation replaces the trusted cluster keys.
		ReplicationVerifier: replVerifier,
		Registry:            registry,
		Logger:              log,
	})
	if err != nil {
		_ = repl.Close()
		_ = n.Close()
		return err
	}

	// Bind every port before serving any, so a taken port fails the start
	// instead of leaving a half-up node.
	var lns []net.Listener
	closeAll := func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}
	for _, addr := range []string{o.AdminAddr, o.DataAddr, o.WireAddr} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			closeAll()
			_ = repl.Close()
			_ = n.Close()
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		lns = append(lns, ln)
	}
	// Data-API tokens are the operator's (directly or delegated once by
	// the cluster's data key); mode None must be asked for explicitly.
	var dataVerifier *identity.Verifier
	if o.Config.DataAuthMode() == nodeconfig.DataAuthNone {
		log.Warn("data API authentication is OFF (dataAuth mode None): anyone who reaches the data and wire ports can ingest and poll")
	} else {
		dataVerifier = identity.NewVerifier([]ed25519.PublicKey{operatorKey}, identity.WithMaxDelegationDepth(1))
		admin.TrustOperatorIn(dataVerifier) // rotations reach data grants too
	}
	adminSrv := &http.Server{Handler: admin, ReadHeaderTimeout: 5 * time.Second}
	dataSrv := &http.Server{Handler: dataapi.NewServer(dataapi.Options{Backend: n, Logger: log, Verifier: dataVerifier}), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 3)
	go func() { errc <- serveHTTP(adminSrv, lns[0]) }()
	go func() { errc <- serveHTTP(dataSrv, lns[1]) }()
	// The wire port carries replication and the binary data API; the
	// first packet's header says which.
	wireData, err := wireapi.NewServer(wireapi.ServerOptions{Backend: n, Logger: log, Verifier: dataVerifier,
		// Binary data-API clients seal their connections (the SDK does by
		// default); the node signs the handshake with its cluster key.
		SessionKey: n.ClusterKey, RequireSealed: true})
	if err != nil {
		closeAll()
		_ = repl.Close()
		_ = n.Close()
		return err
	}
	mux := &wireMux{repl: repl, data: wireData, log: log, peeking: map[net.Conn]struct{}{}}
	go func() { errc <- mux.serve(lns[2]) }()
	retentionCtx, stopRetention := context.WithCancel(context.Background())
	retentionDone := make(chan struct{})
	go func() { defer close(retentionDone); n.RunRetention(retentionCtx, o.RetentionInterval) }()
	log.Info("mesh-node started", "admin", lns[0].Addr().String(), "data", lns[1].Addr().String(), "wire", lns[2].Addr().String())
	if o.Ready != nil {
		o.Ready(lns[0].Addr(), lns[1].Addr(), lns[2].Addr())
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("mesh-node stopping: draining")
	case runErr = <-errc:
		log.Error("a listener failed; stopping", "err", runErr)
	}

	drainErr := drain(n, repl, o.DrainTimeout, log)
	stopRetention()
	<-retentionDone
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = dataSrv.Shutdown(shutdownCtx)
	_ = adminSrv.Shutdown(shutdownCtx)
	_ = lns[2].Close()
	_ = wireData.Close()
	closeErr := errors.Join(repl.Close(), n.Close())
	mux.close()
	if closeErr != nil {
		log.Error("MESH-NODE STOPPED WITH EVENTS NOT FLUSHED", "err", closeErr)
	} else if drainErr == nil && runErr == nil {
		log.Info("mesh-node stopped cleanly")
	}
	return errors.Join(runErr, drainErr, closeErr)
}

// drain refuses new writes, flushes the node bus and waits (bounded) until
// a follower holds the last event of every owned shard that has
// followers.
func drain(n *node.Node, repl *replication.Server, timeout time.Duration, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	st, err := n.Drain(ctx)
	if err != nil {
		log.Error("DRAIN FAILED: accepted events may not be stored", "err", err)
		return err
	}
	t := n.Topology()
	if t == nil {
		return nil
	}
	var errs []error
	for _, s := range n.ShardStatuses() {
		sh, _ := t.Shard(s.ID)
		if s.Role != "owner" || len(sh.Followers) == 0 || s.Next == 0 {
			continue
		}
		if err := repl.WaitReplicated(ctx, s.ID, s.Next-1); err != nil {
			log.Error("DRAIN: shard not fully replicated before stop", "shard", s.ID, "next", s.Next, "err", err)
			errs = append(errs, fmt.Errorf("shard %d: %w", s.ID, err))
		}
	}
	if len(errs) == 0 {
		log.Info("drained", "owned", st.Owned)
	}
	return errors.Join(errs...)
}

func serveHTTP(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func loadKeys(c nodeconfig.Credentials) (ed25519.PublicKey, *identity.KeyPair, error) {
	pubData, err := os.ReadFile(c.OperatorPublicKey)
	if err != nil {
		return nil, nil, fmt.Errorf("credentials.operatorPublicKey: %w", err)
	}
	operatorKey, err := identity.ParsePublicKey(pubData)
	if err != nil {
		return nil, nil, fmt.Errorf("credentials.operatorPublicKey %s: %w", c.OperatorPublicKey, err)
	}
	keyData, err := os.ReadFile(c.ClusterKey)
	if err != nil {
		return nil, nil, fmt.Errorf("credentials.clusterKey: %w", err)
	}
	clusterKey, err := identity.ParsePrivateKey(keyData)
	if err != nil {
		return nil, nil, fmt.Errorf("credentials.clusterKey %s: %w", c.ClusterKey, err)
	}
	return operatorKey, clusterKey, nil
}
