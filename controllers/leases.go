package controllers

import (
	"context"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node/adminclient"
	"github.com/purplerain/mesh-operator/node/topology"
)

// LeaseKeeper pushes every cluster's recorded topology to its members
// again and again: the push at an unchanged epoch renews each owner's
// lease, and a member that missed a change (down, restarted, slow) gets it
// on the next round. It writes nothing to the Kubernetes API.
//
// The reconciler hands it each topology only after recording it in
// status; the keeper never invents one.
type LeaseKeeper struct {
	// Dial returns the admin client of a node; key signs its calls.
	Dial func(key *identity.KeyPair, addr string) adminclient.Client
	Log  logr.Logger

	mu       sync.Mutex
	clusters map[types.NamespacedName]leaseEntry
	kick     chan struct{}
}

type leaseEntry struct {
	topo *topology.Topology
	key  *identity.KeyPair
}

// NewLeaseKeeper returns a keeper that dials nodes over HTTP.
func NewLeaseKeeper(log logr.Logger) *LeaseKeeper {
	return &LeaseKeeper{
		Dial: func(key *identity.KeyPair, addr string) adminclient.Client {
			return adminclient.NewHTTPDialer(key, nil)(addr)
		},
		Log:      log,
		clusters: map[types.NamespacedName]leaseEntry{},
		kick:     make(chan struct{}, 1),
	}
}

// Set records the topology to keep pushing for a cluster and pushes it
// soon.
func (k *LeaseKeeper) Set(cluster types.NamespacedName, t *topology.Topology, key *identity.KeyPair) {
	k.mu.Lock()
	prev, ok := k.clusters[cluster]
	k.clusters[cluster] = leaseEntry{topo: t, key: key}
	k.mu.Unlock()
	if !ok || prev.topo.Epoch != t.Epoch {
		select {
		case k.kick <- struct{}{}:
		default:
		}
	}
}

// Forget stops pushing for a cluster (it was deleted).
func (k *LeaseKeeper) Forget(cluster types.NamespacedName) {
	k.mu.Lock()
	delete(k.clusters, cluster)
	k.mu.Unlock()
}

// Start implements manager.Runnable: it pushes every round until ctx ends.
// A round runs every third of the shortest lease, so an owner renews well
// before its lease runs out even if one round is lost.
func (k *LeaseKeeper) Start(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-k.kick:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
		timer.Reset(k.round(ctx))
	}
}

// round pushes every topology to every member concurrently and returns the
// wait until the next round.
func (k *LeaseKeeper) round(ctx context.Context) time.Duration {
	k.mu.Lock()
	entries := make([]leaseEntry, 0, len(k.clusters))
	interval := 2 * time.Second
	for _, e := range k.clusters {
		entries = append(entries, e)
		interval = min(interval, e.topo.Lease()/3)
	}
	k.mu.Unlock()
	interval = max(interval, 100*time.Millisecond)

	pushCtx, cancel := context.WithTimeout(ctx, interval)
	defer cancel()
	var wg sync.WaitGroup
	for _, e := range entries {
		for _, m := range e.topo.Members {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := k.Dial(e.key, m.Admin).PutTopology(pushCtx, e.topo); err != nil {
					k.Log.V(1).Info("topology push failed", "cluster", e.topo.Cluster, "member", m.Name, "epoch", e.topo.Epoch, "err", err.Error())
				}
			}()
		}
	}
	wg.Wait()
	return interval
}
