// Command manager runs the mesh-operator: the MeshCluster controller with
// metrics, health probes and optional leader election.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers"
)

func main() {
	var (
		metricsAddr   string
		probeAddr     string
		leaderElect   bool
		namespaces    string
		leaderElectNS string
		rotationGrace time.Duration
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "address the Prometheus metrics endpoint binds to; 0 disables it")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address the /healthz and /readyz probes bind to")
	flag.BoolVar(&leaderElect, "leader-elect", false, "elect a leader so only one replica of the operator reconciles")
	flag.StringVar(&leaderElectNS, "leader-election-namespace", "", "namespace of the leader-election lease (default: the operator's namespace)")
	flag.StringVar(&namespaces, "namespace", "", "comma-separated namespaces to watch (default: all namespaces)")
	flag.DurationVar(&rotationGrace, "credential-rotation-grace", time.Minute, "how long a credential rotation keeps the old keys trusted after every node switched to the new ones (time for applications to load the re-signed data grant)")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))

	if err := run(metricsAddr, probeAddr, leaderElect, leaderElectNS, namespaces, rotationGrace); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

func run(metricsAddr, probeAddr string, leaderElect bool, leaderElectNS, namespaces string, rotationGrace time.Duration) error {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(meshv1.AddToScheme(scheme))

	cacheOpts := cache.Options{}
	if namespaces != "" {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range strings.Split(namespaces, ",") {
			if ns = strings.TrimSpace(ns); ns != "" {
				cacheOpts.DefaultNamespaces[ns] = cache.Config{}
			}
		}
	}

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                  scheme,
		Cache:                   cacheOpts,
		Metrics:                 metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "mesh-operator.mesh.purplerain.io",
		LeaderElectionNamespace: leaderElectNS,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	leases := controllers.NewLeaseKeeper(ctrl.Log.WithName("leases"))
	if err := mgr.Add(leases); err != nil {
		return fmt.Errorf("add lease keeper: %w", err)
	}
	if err := (&controllers.MeshClusterReconciler{
		Client:   mgr.GetClient(),
		Scheme:   mgr.GetScheme(),
		Recorder: mgr.GetEventRecorder("mesh-operator"),
		Leases:   leases,
		// How long a rotation's old keys stay trusted after the switch.
		// (The operator metrics register with controller-runtime's
		// registry, served on metricsAddr.)
		RotationGrace: rotationGrace,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up MeshCluster controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("add ready check: %w", err)
	}
	ctrl.Log.WithName("setup").Info("starting manager", "namespaces", namespaces, "leaderElect", leaderElect)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}
