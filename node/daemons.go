package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/compute/daemons"
	"github.com/purplerain/mesh-operator/engine/compute/shardfeed"
	"github.com/purplerain/mesh-operator/engine/cortex"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/replication"
	"github.com/purplerain/mesh-operator/node/topology"
)

// Daemon hosting (DESIGN.md §6): every daemon declared in the node
// configuration runs once per local shard it selects, owned or followed,
// as a compute.Host fed from the shard's log through shardfeed. A
// follower's hosts are fed from the replicated log, so they are warm
// copies: when the node becomes the shard's owner (handoff cutover or
// promotion) the same hosts keep running with the role changed, and their
// state is the fold of the same log the old owner folded. Nothing is
// snapshotted or transferred on a move; see package orchestrate.

// daemonKey names one hosted daemon instance.
type daemonKey struct {
	name  string
	shard uint16
}

// hostedDaemon is one daemon instance on one local shard.
type hostedDaemon struct {
	decl  nodeconfig.Daemon
	shard uint16
	host  *compute.Host
	role  string // "owner" or "follower"
	feed  *cortex.Driver[shardfeed.Progress]
	// feedErr is why the last feed halted (nil while it runs).
	feedErr error
	// store keeps the host's periodic snapshot (Disk mode; nil in
	// Memory mode). A resync stages the owner's snapshot through it
	// (stageResync), so the host's older saves cannot replace it.
	store *snapshotFile
}

// daemonTable holds the node's hosted daemons. Its lock guards the map and
// the entries' role/feed fields; it is never held while daemon code runs
// (starting or closing a feed does not run daemon code under it either:
// the feed's goroutine delivers with no node lock held).
type daemonTable struct {
	kinds *compute.Kinds
	decls []nodeconfig.Daemon
	// snapDir is the storage directory in Disk mode, where each hosted
	// daemon's periodic snapshot is kept (daemonsnap.go); "" in Memory mode.
	snapDir string
	// configs are the decls' configs as the JSON the factories take.
	configs [][]byte

	mu    sync.Mutex
	hosts map[daemonKey]*hostedDaemon
	// feedMu serialises starting, closing and swapping feeds (syncDaemons,
	// closeDaemons, a replication resync's restore), so two of them never
	// race on one host; syncDaemons holds it throughout, so hosts are
	// created, stopped and fed one way at a time. It is taken before mu,
	// never while holding it, and held while daemon code runs only in
	// Restore and Snapshot calls (daemon code takes no node lock).
	feedMu sync.Mutex
	// seeds (guarded by feedMu) are owner snapshots a resync brought for
	// daemon instances not hosted yet: a restarted follower can be resynced
	// before its hosts exist, and the hosts then start from them.
	seeds map[daemonKey]*compute.Snapshot
}

// newDaemonTable checks every declaration against kinds (an unknown kind
// or a config its factory refuses fails at start, naming the field).
func newDaemonTable(kinds *compute.Kinds, decls []nodeconfig.Daemon, snapDir string) (*daemonTable, error) {
	if kinds == nil {
		kinds = daemons.Builtins()
	}
	dt := &daemonTable{kinds: kinds, decls: decls, snapDir: snapDir, hosts: map[daemonKey]*hostedDaemon{}, seeds: map[daemonKey]*compute.Snapshot{}}
	for i, d := range decls {
		var cfg []byte
		if len(d.Config) > 0 {
			b, err := json.Marshal(d.Config)
			if err != nil {
				return nil, fmt.Errorf("daemons[%d].config: %w", i, err)
			}
			cfg = b
		}
		if _, err := kinds.New(d.Kind, d.Name, cfg); err != nil {
			return nil, fmt.Errorf("daemons[%d] (%s): %w", i, d.Name, err)
		}
		dt.configs = append(dt.configs, cfg)
	}
	return dt, nil
}

// selects reports whether declaration d runs on shard id.
func selects(d nodeconfig.Daemon, id uint16, baseShards int) bool {
	if len(d.Shards) == 0 {
		return int(id) < baseShards
	}
	return slices.Contains(d.Shards, int(id))
}

// syncDaemons makes the hosted daemons match t: one host per declared
// daemon and local shard it selects, with the shard's role. A shard the
// node neither owns nor follows any more has its hosts stopped; a shard
// whose role changed keeps its hosts (the warm copy becomes the owner's
// state). A feed that halted is restarted, resuming at its host's cursor.
// Callers hold applyMu, after syncFollowers and syncShards.
func (n *Node) syncDaemons(t *topology.Topology) error {
	dt := n.daemons
	if len(dt.decls) == 0 {
		return nil
	}
	roles := map[uint16]string{}
	for _, id := range t.FollowedBy(n.name) {
		roles[id] = "follower"
	}
	for _, id := range t.OwnedBy(n.name) {
		roles[id] = "owner"
	}
	want := map[daemonKey]int{} // -> decl index
	for i, d := range dt.decls {
		for id := range roles {
			if selects(d, id, t.BaseShards) {
				want[daemonKey{d.Name, id}] = i
			}
		}
	}

	dt.feedMu.Lock()
	defer dt.feedMu.Unlock()
	for k := range dt.seeds {
		if _, ok := want[k]; !ok {
			delete(dt.seeds, k)
		}
	}
	dt.mu.Lock()
	var stop []*hostedDaemon
	for k, h := range dt.hosts {
		if _, ok := want[k]; !ok {
			stop = append(stop, h)
			delete(dt.hosts, k)
		}
	}
	dt.mu.Unlock()
	for _, h := range stop {
		if h.feed != nil {
			_ = h.feed.Close()
		}
		n.logger.Info("daemon stopped", "daemon", h.decl.Name, "shard", h.shard)
	}

	var errs []error
	for k, i := range want {
		dt.mu.Lock()
		h, ok := dt.hosts[k]
		if ok {
			h.role = roles[k.shard]
		}
		dt.mu.Unlock()
		if !ok {
			d, err := dt.kinds.New(dt.decls[i].Kind, k.name, dt.configs[i])
			if err != nil {
				errs = append(errs, fmt.Errorf("daemon %s on shard %d: %w", k.name, k.shard, err))
				continue
			}
			// A lagged or diverged follower's reset log gets its copies
			// restored from the owner's snapshots (resyncDaemons); no log
			// is cut back under a feed (TruncateDiverged is off).
			host, store, err := n.newDaemonHost(k, dt.decls[i].Kind, dt.configs[i], d, roles[k.shard] == "follower")
			if err != nil {
				errs = append(errs, err)
				continue
			}
			h = &hostedDaemon{decl: dt.decls[i], shard: k.shard, host: host, role: roles[k.shard], store: store}
			dt.mu.Lock()
			dt.hosts[k] = h
			dt.mu.Unlock()
		}
		if err := n.ensureFeedLocked(h); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// newDaemonHost builds the host of a fresh daemon d. In Memory mode it
// starts at seq 0 of the shard's log. In Disk mode it takes periodic
// snapshots to a file and starts from the stored one when that still fits
// the log and the declaration (loadSnapshot), else from seq 0.
//
// A follower whose owner pruned past its log is resynced from the owner's
// head with the owner's daemon snapshots (resyncDaemons), whatever its
// own snapshots hold. TODO(issue 7): an owner, or a follower that is not
// lagged, whose own retention pruned its log past every stored snapshot
// (or whose Memory-mode log does not start at 0) cannot seed a daemon:
// its feed halts with redex.ErrPruned and status reports it; fetching a
// peer's snapshot for it is not done.
func (n *Node) newDaemonHost(k daemonKey, kind string, config []byte, d compute.MeshDaemon, follower bool) (*compute.Host, *snapshotFile, error) {
	dt := n.daemons
	seed := dt.seeds[k]
	delete(dt.seeds, k)
	if seed != nil && (seed.Kind != kind || !bytes.Equal(seed.Config, config)) {
		seed = nil
	}
	if dt.snapDir == "" {
		if seed != nil {
			if h, err := compute.RestoreHost(seed, d, compute.HostConfig{}); err == nil {
				n.logger.Info("daemon copy restored from the owner's resync snapshot", "daemon", k.name, "shard", k.shard, "next", seed.Cursor.Next())
				return h, nil, nil
			}
		}
		return compute.NewHost(k.name, kind, config, d, compute.CursorAt(0), compute.HostConfig{}), nil, nil
	}
	l, err := n.logs.Log(k.shard)
	if err != nil {
		return nil, nil, fmt.Errorf("daemon %s on shard %d: open log: %w", k.name, k.shard, err)
	}
	store := &snapshotFile{path: snapshotPath(dt.snapDir, k.name, k.shard), log: l}
	cfg := compute.HostConfig{SnapshotEvery: daemonSnapshotEvery, Store: store}
	if seed != nil {
		if h, err := compute.RestoreHost(seed, d, cfg); err == nil {
			_, _ = h.Snapshot() // replaces the stored one, which the reset left behind
			n.logger.Info("daemon copy restored from the owner's resync snapshot", "daemon", k.name, "shard", k.shard, "next", seed.Cursor.Next())
			return h, store, nil
		}
	}
	snap, why := loadSnapshot(store.path, kind, config, l, follower)
	if why != "" {
		n.logger.Warn("daemon snapshot not used; folding the log from the start", "daemon", k.name, "shard", k.shard, "reason", why)
	}
	if snap != nil {
		h, err := compute.RestoreHost(snap, d, cfg)
		if err == nil {
			store.next = snap.Cursor.Next()
			n.logger.Info("daemon restored from its snapshot", "daemon", k.name, "shard", k.shard, "next", snap.Cursor.Next())
			return h, store, nil
		}
		// A failed Restore leaves d's (fresh) state intact.
		n.logger.Warn("daemon snapshot does not restore; folding the log from the start", "daemon", k.name, "shard", k.shard, "err", err)
	}
	return compute.NewHost(k.name, kind, config, d, compute.CursorAt(0), cfg), store, nil
}

// ensureFeedLocked starts h's feed unless it is running. A halted feed's
// error is kept for status and the feed restarted at the host's cursor.
// Callers hold dt.feedMu.
func (n *Node) ensureFeedLocked(h *hostedDaemon) error {
	dt := n.daemons
	dt.mu.Lock()
	old := h.feed
	dt.mu.Unlock()
	if old != nil {
		if old.IsRunning() {
			return nil
		}
		err := old.Err()
		_ = old.Close()
		n.logger.Warn("daemon feed halted; restarting", "daemon", h.decl.Name, "shard", h.shard, "err", err)
		dt.mu.Lock()
		h.feedErr = err
		h.feed = nil
		dt.mu.Unlock()
	}
	l, err := n.logs.Log(h.shard)
	if err != nil {
		return fmt.Errorf("daemon %s on shard %d: open log: %w", h.decl.Name, h.shard, err)
	}
	feed, err := shardfeed.Start(l, h.host, nil)
	if err != nil {
		return fmt.Errorf("daemon %s on shard %d: start feed: %w", h.decl.Name, h.shard, err)
	}
	dt.mu.Lock()
	h.feed = feed
	dt.mu.Unlock()
	return nil
}

// closeDaemons stops every feed (before the logs close). It holds applyMu
// so no topology change starts a feed meanwhile.
func (n *Node) closeDaemons() {
	n.applyMu.Lock()
	defer n.applyMu.Unlock()
	dt := n.daemons
	dt.feedMu.Lock()
	defer dt.feedMu.Unlock()
	dt.mu.Lock()
	hosts := dt.hosts
	dt.hosts = map[daemonKey]*hostedDaemon{}
	dt.mu.Unlock()
	for _, h := range hosts {
		if h.feed != nil {
			_ = h.feed.Close()
		}
	}
}

// DaemonStatus is one hosted daemon instance as GET /v1/daemons shows it.
type DaemonStatus struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	Shard uint16 `json:"shard"`
	Role  string `json:"role"` // "owner" or "follower"
	// Next is the next seq of the shard's log the daemon expects: its
	// state is the fold of entries [0, Next). Through is Next-1, absent
	// when nothing was applied.
	Next    uint64  `json:"next"`
	Through *uint64 `json:"through,omitempty"`
	// Running says the feed is applying the log; Error is why it last
	// halted (a halted feed restarts at the next topology change).
	Running bool   `json:"running"`
	Error   string `json:"error,omitempty"`
	// State is the daemon's state as JSON (the built-in kinds' views),
	// taken with Next under one hold of the host, so the two agree.
	State json.RawMessage `json:"state,omitempty"`
	// StateError says why State is missing (a kind without a view).
	StateError string `json:"stateError,omitempty"`
	// SnapshotError is the last periodic snapshot's failure (Disk mode).
	SnapshotError string `json:"snapshotError,omitempty"`
}

// DaemonStatuses reports every hosted daemon instance, sorted by name and
// shard. withState adds each daemon's state (a snapshot per host, which
// in Disk mode also refreshes the stored snapshot when it advanced).
func (n *Node) DaemonStatuses(withState bool) []DaemonStatus {
	dt := n.daemons
	dt.mu.Lock()
	type entry struct {
		h       *hostedDaemon
		role    string
		running bool
		err     error
	}
	entries := make([]entry, 0, len(dt.hosts))
	for _, h := range dt.hosts {
		e := entry{h: h, role: h.role, err: h.feedErr}
		if h.feed != nil {
			e.running = h.feed.IsRunning()
			if !e.running && h.feed.Err() != nil {
				e.err = h.feed.Err()
			}
		}
		entries = append(entries, e)
	}
	dt.mu.Unlock()

	out := make([]DaemonStatus, 0, len(entries))
	for _, e := range entries {
		h := e.h.host
		st := DaemonStatus{Name: e.h.decl.Name, Kind: h.Kind(), Shard: e.h.shard, Role: e.role, Running: e.running}
		if e.err != nil {
			st.Error = e.err.Error()
		}
		if err := h.SnapshotErr(); err != nil {
			st.SnapshotError = err.Error()
		}
		cur := h.Cursor()
		if withState {
			if snap, err := h.Snapshot(); err != nil {
				st.StateError = err.Error()
			} else {
				cur = snap.Cursor
				if v, err := daemons.StateView(h.Kind(), h.Config(), snap.State); err != nil {
					st.StateError = err.Error()
				} else if b, err := json.Marshal(v); err != nil {
					st.StateError = err.Error()
				} else {
					st.State = b
				}
			}
		}
		st.Next = cur.Next()
		if through, ok := cur.Through(); ok {
			st.Through = &through
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b DaemonStatus) int {
		if a.Name != b.Name {
			if a.Name < b.Name {
				return -1
			}
			return 1
		}
		return int(a.Shard) - int(b.Shard)
	})
	return out
}

// daemonProgress summarises the daemons on shard id for ShardStatus: how
// many are hosted and the lowest next seq among those whose feed runs (a
// halted daemon would stay behind on any node, so it does not hold a
// handoff back; it is reported in DaemonStatuses).
func (n *Node) daemonProgress(id uint16) (count int, next uint64, ok bool) {
	dt := n.daemons
	dt.mu.Lock()
	defer dt.mu.Unlock()
	for k, h := range dt.hosts {
		if k.shard != id {
			continue
		}
		count++
		if h.feed == nil || !h.feed.IsRunning() {
			continue
		}
		nx := h.host.Cursor().Next()
		if !ok || nx < next {
			next, ok = nx, true
		}
	}
	return count, next, ok
}

// daemonSnapshots takes a snapshot of every daemon hosted on shard, for a
// replication resync of a lagged follower (ownerSource.DaemonSnapshots).
// A halted daemon's snapshot is its state at the entry it halted on.
func (n *Node) daemonSnapshots(shard uint16) ([][]byte, error) {
	dt := n.daemons
	dt.mu.Lock()
	var hosts []*hostedDaemon
	for k, h := range dt.hosts {
		if k.shard == shard {
			hosts = append(hosts, h)
		}
	}
	dt.mu.Unlock()
	var (
		out  [][]byte
		errs []error
	)
	for _, h := range hosts {
		snap, err := h.host.Snapshot()
		if err != nil {
			errs = append(errs, fmt.Errorf("daemon %s on shard %d: %w", h.decl.Name, shard, err))
			continue
		}
		out = append(out, snap.Encode())
	}
	return out, errors.Join(errs...)
}

// stageResync runs when the replication follower of r.Shard has the
// owner's daemon snapshots and is about to reset its log to the owner's
// head (FollowerOptions.StageResync). In Disk mode it stops the shard's
// feeds and stores each owner snapshot as its daemon's snapshot file,
// durably, before the reset: a crash after the reset then restarts the
// copies from the owner's state (loadSnapshot takes a follower snapshot
// ahead of its log) instead of from their own snapshots, which lie below
// the head the log now starts at, so they would halt for good. A crash
// before the reset finds the log still lagged and is resynced again.
// resyncDaemons restores the copies and restarts the feeds after the
// reset.
func (n *Node) stageResync(r replication.Resync) {
	dt := n.daemons
	if dt.snapDir == "" {
		return // Memory mode: a restart loses the log too
	}
	l, err := n.logs.Log(r.Shard)
	if err != nil {
		n.logger.Warn("resync: daemon snapshots not staged", "shard", r.Shard, "err", err)
		return
	}
	dt.feedMu.Lock()
	defer dt.feedMu.Unlock()
	dt.mu.Lock()
	hosts := map[string]*hostedDaemon{}
	for k, h := range dt.hosts {
		if k.shard == r.Shard {
			hosts[k.name] = h
		}
	}
	dt.mu.Unlock()
	for _, h := range hosts {
		// A running feed would keep saving the copy's own (older) state.
		dt.mu.Lock()
		old := h.feed
		h.feed, h.feedErr = nil, nil
		dt.mu.Unlock()
		if old != nil {
			_ = old.Close()
		}
	}
	for _, b := range r.Daemons {
		snap, err := compute.DecodeSnapshot(b)
		if err != nil {
			continue // resyncDaemons reports it
		}
		store := &snapshotFile{path: snapshotPath(dt.snapDir, snap.Daemon, r.Shard), log: l}
		if h := hosts[snap.Daemon]; h != nil && h.store != nil {
			store = h.store // its cursor guard keeps older saves out
		}
		if r.Diverged {
			// The stored snapshot covers entries the owner never had
			// and may be ahead of the owner's: the owner's replaces it
			// (the feeds are stopped, so nothing saves over it).
			store.mu.Lock()
			store.next = 0
			store.mu.Unlock()
		}
		if err := store.SaveSnapshot(snap); err != nil {
			n.logger.Warn("resync: owner's daemon snapshot not staged", "daemon", snap.Daemon, "shard", r.Shard, "err", err)
		}
	}
}

// resyncCrashed, set by tests, makes resyncDaemons do nothing, as if the
// process died right after the follower's log reset.
var resyncCrashed func() bool

// resyncDaemons runs when the replication follower of r.Shard was reset
// to the owner's log head (FollowerOptions.Resync): every warm copy on the
// shard is restored from the owner's snapshot of the same daemon (same
// kind and config) and its feed restarted at the snapshot's cursor, so it
// holds the owner's state and folds the entries that follow. A copy the
// owner sent no snapshot for keeps its state, and its feed halts with
// redex.ErrPruned (status reports it): the log it would need is gone.
// It runs on the follower's goroutine, before any entry after the head
// is appended, and takes no applyMu (ApplyTopology waits for followers).
func (n *Node) resyncDaemons(r replication.Resync) {
	if resyncCrashed != nil && resyncCrashed() {
		return
	}
	snaps := map[string]*compute.Snapshot{}
	for _, b := range r.Daemons {
		s, err := compute.DecodeSnapshot(b)
		if err != nil {
			n.logger.Warn("resync: owner's daemon snapshot does not decode", "shard", r.Shard, "err", err)
			continue
		}
		snaps[s.Daemon] = s
	}
	dt := n.daemons
	dt.feedMu.Lock()
	defer dt.feedMu.Unlock()
	dt.mu.Lock()
	var hosts []*hostedDaemon
	for k, h := range dt.hosts {
		if k.shard == r.Shard {
			hosts = append(hosts, h)
		}
	}
	for k := range dt.seeds {
		if k.shard == r.Shard {
			delete(dt.seeds, k)
		}
	}
	for name, s := range snaps {
		// Not hosted yet (the topology that starts it is still being
		// applied): the host starts from the owner's snapshot.
		if k := (daemonKey{name, r.Shard}); dt.hosts[k] == nil {
			dt.seeds[k] = s
		}
	}
	dt.mu.Unlock()
	for _, h := range hosts {
		dt.mu.Lock()
		old := h.feed
		h.feed, h.feedErr = nil, nil
		dt.mu.Unlock()
		if old != nil {
			_ = old.Close()
		}
		snap := snaps[h.decl.Name]
		switch {
		case snap == nil:
			// TODO(issue 8): after a diverged resync this copy keeps
			// state folded from entries the owner never had; rebuilding
			// it needs the owner's snapshot (or the whole log from 0).
			n.logger.Warn("resync: the owner sent no snapshot of this daemon; its copy stays behind the log head",
				"daemon", h.decl.Name, "shard", r.Shard, "head", r.First, "diverged", r.Diverged)
		case snap.Kind != h.host.Kind() || !bytes.Equal(snap.Config, h.host.Config()):
			n.logger.Warn("resync: the owner's snapshot of this daemon has another kind or config; its copy stays behind the log head",
				"daemon", h.decl.Name, "shard", r.Shard, "head", r.First)
		default:
			if err := h.host.Restore(snap); err != nil {
				n.logger.Warn("resync: restoring the owner's daemon snapshot failed", "daemon", h.decl.Name, "shard", r.Shard, "err", err)
				break
			}
			if dt.snapDir != "" {
				// Replace the stored snapshot, which covers entries the
				// reset dropped. It covers entries the log does not hold
				// until replication reaches its cursor; a follower restarted
				// before that still starts from it (loadSnapshot).
				// TODO(issue 7): a promotion before the log reaches the
				// cursor leaves the copy ahead of the log (a window of one
				// catch-up of the retained log).
				_, _ = h.host.Snapshot()
			}
			n.logger.Info("resync: daemon copy restored from the owner's snapshot", "daemon", h.decl.Name, "shard", r.Shard, "next", snap.Cursor.Next())
		}
		dt.mu.Lock()
		hosted := dt.hosts[daemonKey{h.decl.Name, r.Shard}] == h
		dt.mu.Unlock()
		if hosted {
			if err := n.ensureFeedLocked(h); err != nil {
				n.logger.Warn("resync: restart daemon feed", "daemon", h.decl.Name, "shard", r.Shard, "err", err)
			}
		}
	}
}
