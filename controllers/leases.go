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
	clusters map[types.NamespacedName]*leaseEntry
	// running clusters ran before this keeper started keeping them (see
	// Running).
	running map[types.NamespacedName]bool
	kick    chan struct{}
}

type leaseEntry struct {
	topo *topology.Topology
	key  *identity.KeyPair
	// since is when the keeper started keeping the cluster; lastPush is,
	// per member, when the last push to it that it answered returned.
	since    time.Time
	lastPush map[string]time.Time
	// inflight is, per member, the deadline of a push under way (it may
	// reach the node until then); suspended members get no renewal until
	// a newer epoch is set (a failover waits their lease out).
	inflight  map[string]time.Time
	suspended map[string]bool
	// guardRestarts (memory mode): an owner whose last push failed is
	// asked for its status before the next one; a node that answers
	// with no topology restarted with an empty log and is not pushed a
	// topology in which it owns shards (restarted), so it never accepts
	// writes from seq 0 while its followers hold the shard's history.
	guardRestarts bool
	suspect       map[string]bool
	restarted     map[string]bool
	// confirmed members answered a push since the keeper started: only
	// they can come back "restarted" (a member being created holds no
	// topology either).
	confirmed map[string]bool
}

// NewLeaseKeeper returns a keeper that dials nodes over HTTP.
func NewLeaseKeeper(log logr.Logger) *LeaseKeeper {
	return &LeaseKeeper{
		Dial: func(key *identity.KeyPair, addr string) adminclient.Client {
			return adminclient.NewHTTPDialer(key, nil)(addr)
		},
		Log:      log,
		clusters: map[types.NamespacedName]*leaseEntry{},
		kick:     make(chan struct{}, 1),
	}
}

// Set records the topology to keep pushing for a cluster and pushes it
// soon. A topology older than the one kept is ignored (a reconcile that
// read a stale cache must not make the keeper push an epoch the nodes
// already left behind).
func (k *LeaseKeeper) Set(cluster types.NamespacedName, t *topology.Topology, key *identity.KeyPair) {
	k.SetGuarded(cluster, t, key, false)
}

// SetGuarded is Set; guardRestarts (clusters whose nodes keep logs in
// memory) makes the keeper withhold ownership from an owner that came
// back empty (see Restarted).
func (k *LeaseKeeper) SetGuarded(cluster types.NamespacedName, t *topology.Topology, key *identity.KeyPair, guardRestarts bool) {
	k.mu.Lock()
	e, ok := k.clusters[cluster]
	if ok && t.Epoch < e.topo.Epoch {
		k.mu.Unlock()
		return
	}
	changed := !ok || e.topo.Epoch != t.Epoch
	if !ok {
		e = &leaseEntry{since: time.Now(), lastPush: map[string]time.Time{}, inflight: map[string]time.Time{},
			suspect: map[string]bool{}, restarted: map[string]bool{}, confirmed: map[string]bool{}}
		k.clusters[cluster] = e
		if k.running[cluster] {
			// A restarted operator knows nothing of the owners' past:
			// each is asked for its status before its first push, and
			// one that answers without a topology lost it (and its
			// memory-mode log) while no operator watched.
			for _, s := range t.Shards {
				e.suspect[s.Owner], e.confirmed[s.Owner] = true, true
			}
		}
	}
	if changed {
		e.suspended = nil
	}
	if e.topo != nil {
		// A member at a new address is a new process.
		for _, m := range t.Members {
			if old, ok := e.topo.Member(m.Name); ok && old.Admin != m.Admin {
				e.suspect[m.Name] = true
			}
		}
	}
	e.guardRestarts = guardRestarts
	for name := range e.restarted {
		if len(t.OwnedBy(name)) == 0 {
			delete(e.restarted, name)
			delete(e.suspect, name)
		}
	}
	e.topo, e.key = t, key
	k.mu.Unlock()
	if changed {
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
	delete(k.running, cluster)
	k.mu.Unlock()
}

// Running tells the keeper, before its first Set for the cluster, that the
// cluster ran before (it was Available once). After an operator restart
// the keeper has no push history: without this it would push ownership
// to an owner that restarted empty while no operator ran (a memory-mode
// node that lost its log), and that owner would accept writes from seq 0
// while its followers hold the shard's history. With it, every owner of
// the first kept topology is asked for its status before its first push;
// one that holds no topology once held one (ownership is pushed only to
// nodes that hold a topology, except at creation, before the cluster
// ran) and is withheld (Restarted), so it is failed over at once.
//
// planOperation calls it, and so does the paused path of Reconcile (a
// paused cluster plans nothing) before it hands a restarted operator's
// keeper the recorded topology: the other owners' leases are renewed
// through the pause while an owner that came back empty is withheld, and
// is failed over on the first pass after the pause (pinned by the spec
// "A restarted operator of a paused cluster").
func (k *LeaseKeeper) Running(cluster types.NamespacedName) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.running == nil {
		k.running = map[types.NamespacedName]bool{}
	}
	k.running[cluster] = true
}

// Kept is the epoch of the topology the keeper pushes for cluster, 0 when
// it keeps none.
func (k *LeaseKeeper) Kept(cluster types.NamespacedName) uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := k.clusters[cluster]; ok {
		return e.topo.Epoch
	}
	return 0
}

// LastPush is when the last push to member that it answered returned (the
// keeper's own renewals and NotePush reports), or the zero time when none
// is known (for example after an operator restart): the caller must then
// assume a push may have just happened.
func (k *LeaseKeeper) LastPush(cluster types.NamespacedName, member string) time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := k.clusters[cluster]; ok {
		return e.lastPush[member]
	}
	return time.Time{}
}

// Restarted says member owns shards in the kept topology but came back
// without a topology (and without its memory-mode log): the keeper does not
// push to it, and its shards need a failover.
func (k *LeaseKeeper) Restarted(cluster types.NamespacedName, member string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	e, ok := k.clusters[cluster]
	return ok && e.restarted[member]
}

// Suspend stops renewing member's lease until a topology at a newer epoch
// is set: a failover calls it before waiting the lease out, so the wait is
// not undone by a renewal. Resume undoes it (the failover did not happen).
func (k *LeaseKeeper) Suspend(cluster types.NamespacedName, member string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := k.clusters[cluster]; ok {
		if e.suspended == nil {
			e.suspended = map[string]bool{}
		}
		e.suspended[member] = true
	}
}

// Resume renews member's lease again after Suspend.
func (k *LeaseKeeper) Resume(cluster types.NamespacedName, member string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := k.clusters[cluster]; ok {
		delete(e.suspended, member)
	}
}

// LeaseFrom is the latest time a push the keeper (or NotePush) knows of
// may have renewed member's lease: the last answered push, or the deadline
// of one still under way. Zero when nothing is known.
func (k *LeaseKeeper) LeaseFrom(cluster types.NamespacedName, member string) time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	e, ok := k.clusters[cluster]
	if !ok {
		return time.Time{}
	}
	at := e.lastPush[member]
	if d, ok := e.inflight[member]; ok && d.After(at) {
		at = d
	}
	return at
}

// NotePush records a push to member answered at time at (pushes the
// operator makes outside the keeper, through the orchestration driver).
func (k *LeaseKeeper) NotePush(cluster types.NamespacedName, member string, at time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := k.clusters[cluster]; ok {
		e.confirmed[member] = true
		if at.After(e.lastPush[member]) {
			e.lastPush[member] = at
		}
	}
}

// Unreachable says the keeper has kept the cluster for longer than after
// and no push to member succeeded within the last after.
func (k *LeaseKeeper) Unreachable(cluster types.NamespacedName, member string, after time.Duration) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	e, ok := k.clusters[cluster]
	if !ok {
		return false
	}
	last := e.lastPush[member]
	if last.Before(e.since) {
		last = e.since
	}
	return time.Since(last) > after
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
	type job struct {
		cluster types.NamespacedName
		topo    *topology.Topology
		key     *identity.KeyPair
	}
	k.mu.Lock()
	entries := make([]job, 0, len(k.clusters))
	interval := 2 * time.Second
	for name, e := range k.clusters {
		entries = append(entries, job{name, e.topo, e.key})
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
				// A failover may have recorded a newer epoch since the
				// round began: never renew the old one (it may make a
				// failed-over member an owner again).
				c := k.Dial(e.key, m.Admin)
				if k.checkFirst(e.cluster, e.topo, m.Name) {
					st, err := c.Status(pushCtx)
					if err != nil {
						return
					}
					if ok, found := k.cleared(e.cluster, m.Name, st.Epoch); !ok {
						// Once per restart: a paused cluster withholds it
						// every round until the pause ends.
						if found {
							k.Log.Info("owner came back without a topology: withholding it", "cluster", e.topo.Cluster, "member", m.Name, "epoch", e.topo.Epoch)
						}
						return
					}
				}
				deadline, _ := pushCtx.Deadline()
				if !k.begin(e.cluster, e.topo, m.Name, deadline) {
					return
				}
				defer k.end(e.cluster, m.Name)
				if err := c.PutTopology(pushCtx, e.topo); err != nil {
					k.Log.V(1).Info("topology push failed", "cluster", e.topo.Cluster, "member", m.Name, "epoch", e.topo.Epoch, "err", err.Error())
					k.markSuspect(e.cluster, m.Name)
					return
				}
				k.NotePush(e.cluster, m.Name, time.Now())
			}()
		}
	}
	wg.Wait()
	return interval
}

// begin says whether to push t to member now (t is still the cluster's
// topology and member is not suspended) and records the push as under way
// until deadline.
func (k *LeaseKeeper) begin(cluster types.NamespacedName, t *topology.Topology, member string, deadline time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	e, ok := k.clusters[cluster]
	if !ok || e.topo.Epoch != t.Epoch || e.suspended[member] {
		return false
	}
	e.inflight[member] = deadline
	return true
}

// checkFirst says member must be asked for its status before a push: a
// memory-mode owner whose last push failed (or that was found restarted).
func (k *LeaseKeeper) checkFirst(cluster types.NamespacedName, t *topology.Topology, member string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	e, ok := k.clusters[cluster]
	return ok && e.guardRestarts && (e.suspect[member] || e.restarted[member]) && len(t.OwnedBy(member)) > 0
}

// cleared records what a suspect member's status showed: a node holding a
// topology is the same process (cleared); one holding none restarted
// (found: this status is the first to show it).
func (k *LeaseKeeper) cleared(cluster types.NamespacedName, member string, epoch uint64) (ok, found bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e, kept := k.clusters[cluster]
	if !kept {
		return false, false
	}
	if epoch == 0 && e.confirmed[member] {
		found = !e.restarted[member]
		e.restarted[member] = true
		return false, found
	}
	delete(e.suspect, member)
	delete(e.restarted, member)
	return true, false
}

func (k *LeaseKeeper) markSuspect(cluster types.NamespacedName, member string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := k.clusters[cluster]; ok {
		e.suspect[member] = true
	}
}

func (k *LeaseKeeper) end(cluster types.NamespacedName, member string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := k.clusters[cluster]; ok {
		delete(e.inflight, member)
	}
}
