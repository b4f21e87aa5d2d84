package node

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/purplerain/mesh-operator/node/replication"
	"github.com/purplerain/mesh-operator/node/topology"
)

// ShardStatus is one local shard as the operator sees it in status: the
// log's range, and for an owner how far its followers got, for a follower
// how far behind the owner it is. The operator promotes the follower with
// the highest Next and cuts a handoff over when the new owner's Next
// equals the fenced owner's.
type ShardStatus struct {
	ID     uint16 `json:"id"`
	Role   string `json:"role"` // "owner" or "follower"
	Fenced bool   `json:"fenced,omitempty"`
	// First and Next bound the local log: entries [First, Next).
	First uint64 `json:"first"`
	Next  uint64 `json:"next"`
	// Followers (owner): what each follower acknowledged.
	Followers []replication.FollowerPosition `json:"followers,omitempty"`
	// Lag, Connected and Error (follower): the replication stream's state.
	Lag       uint64 `json:"lag,omitempty"`
	Connected bool   `json:"connected,omitempty"`
	Error     string `json:"error,omitempty"`
	// Daemons is how many daemon instances run on the shard here, and
	// DaemonNext the lowest next seq among those whose feed runs: when it
	// equals Next every daemon state here is the fold of the whole local
	// log. A handoff cuts over only then (package orchestrate).
	Daemons    int    `json:"daemons,omitempty"`
	DaemonNext uint64 `json:"daemonNext,omitempty"`
	// Draining (an added shard autoscaling retires): the shard takes no
	// new events and is read until retention empties it (First == Next).
	// An owner reports it only once its node bus released the shard, so
	// its First and Next then cover every event it may acknowledge on
	// the shard: the operator removes a drained shard on that report
	// alone.
	Draining bool `json:"draining,omitempty"`
	// Load (owner) is what the node measured of the shard over the last
	// second: the signals of the autoscaling policy.
	Load *ShardLoad `json:"load,omitempty"`
}

// ShardLoad is an owned shard's load over the last sampling window
// (loadWindow), measured on the node bus and the shard's log.
type ShardLoad struct {
	// FillRatio is the shard's mean ring occupancy over the window, as a
	// fraction of the ring's capacity (0..1).
	FillRatio float64 `json:"fillRatio"`
	// EventRate is how many events per second were appended to the
	// shard's log over the window.
	EventRate float64 `json:"eventRate"`
	// PushLatencyMicros is the mean time an event waited in the ring
	// before the drain worker took it, by Little's law: mean occupancy
	// divided by the append rate (0 when nothing was appended).
	PushLatencyMicros int64 `json:"pushLatencyMicros"`
	// FlushLatencyMicros is the mean time a batch took to reach the log
	// (node bus ShardTiming), over the samples that saw the shard
	// dispatch since the one before: an idle shard reports 0 (omitted),
	// not its last batch's time. A batch still stuck in the log is not
	// counted until it returns.
	FlushLatencyMicros int64 `json:"flushLatencyMicros,omitempty"`
	// Samples is how many samples the window holds.
	Samples int `json:"samples"`
}

// busRingCapacity is each node-bus shard's ring size (newBus,
// dataplane.go); fill ratios are relative to it.
const busRingCapacity = 1 << 14

const (
	// loadSampleInterval is how often the node samples every owned shard.
	loadSampleInterval = 100 * time.Millisecond
	// loadWindow is how far back ShardLoad looks. The operator averages
	// the reports over the policy's metricsWindow on top of it.
	loadWindow = time.Second
)

// loadSample is one observation of one owned shard.
type loadSample struct {
	at        time.Time
	occupancy int
	next      uint64
	// flush is the bus's last batch time and processed its event count
	// at the sample (timed: the bus answered).
	flush     time.Duration
	processed uint64
	timed     bool
}

// loadSampler keeps the last loadWindow of samples of every owned shard.
type loadSampler struct {
	mu     sync.Mutex
	shards map[uint16][]loadSample
}

// sample records one observation of every shard in owned at now and
// forgets shards no longer owned.
func (ls *loadSampler) sample(n *Node, owned []uint16, now time.Time) {
	obs := make(map[uint16]loadSample, len(owned))
	for _, id := range owned {
		l, err := n.logs.Log(id)
		if err != nil {
			continue
		}
		// A draining shard is not in the bus: its occupancy is 0.
		occ, _ := n.bus.ShardLoad(id)
		o := loadSample{at: now, occupancy: occ, next: l.NextSeq()}
		if tm, ok := n.bus.ShardTiming(id); ok {
			o.flush, o.processed, o.timed = tm.Flush, tm.Processed, true
		}
		obs[id] = o
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.shards == nil {
		ls.shards = map[uint16][]loadSample{}
	}
	for id := range ls.shards {
		if _, ok := obs[id]; !ok {
			delete(ls.shards, id)
		}
	}
	for id, o := range obs {
		ls.shards[id] = appendLoadSample(ls.shards[id], o)
	}
}

// appendLoadSample adds o to w and drops the samples older than
// loadWindow before o, keeping one at or before the window's start so the
// rate spans the whole window.
func appendLoadSample(w []loadSample, o loadSample) []loadSample {
	w = append(w, o)
	cut := 0
	for cut+1 < len(w) && !w[cut+1].at.After(o.at.Add(-loadWindow)) {
		cut++
	}
	return append(w[:0], w[cut:]...)
}

// load derives shard id's ShardLoad from its window (nil: no sample yet).
func (ls *loadSampler) load(id uint16) *ShardLoad {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	w := ls.shards[id]
	if len(w) == 0 {
		return nil
	}
	out := &ShardLoad{Samples: len(w)}
	occ := 0
	for _, s := range w {
		occ += s.occupancy
	}
	meanOcc := float64(occ) / float64(len(w))
	out.FillRatio = meanOcc / busRingCapacity
	first, last := w[0], w[len(w)-1]
	if span := last.at.Sub(first.at); span > 0 && last.next > first.next {
		out.EventRate = float64(last.next-first.next) / span.Seconds()
		out.PushLatencyMicros = int64(meanOcc / out.EventRate * 1e6)
	}
	out.FlushLatencyMicros = meanFlush(w).Microseconds()
	return out
}

// meanFlush is the mean of the bus's last batch time over the samples of w
// that saw the shard process events since the previous timed sample (a
// fresh batch time); 0 when none did.
func meanFlush(w []loadSample) time.Duration {
	var (
		sum  time.Duration
		n    int
		prev *loadSample
	)
	for i := range w {
		s := &w[i]
		if !s.timed {
			continue
		}
		if prev != nil && s.processed > prev.processed {
			sum += s.flush
			n++
		}
		prev = s
	}
	if n == 0 {
		return 0
	}
	return sum / time.Duration(n)
}

// runLoadSampler samples the owned shards every loadSampleInterval until
// stop is closed. Samples are timed on the real clock, not on n.now (the
// lease clock, which tests set by hand): rates are events per real
// second, and the sampler must not read a clock another goroutine sets.
func (n *Node) runLoadSampler(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(loadSampleInterval)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			var owned []uint16
			if t := n.Topology(); t != nil {
				owned = t.OwnedBy(n.name)
			}
			n.load.sample(n, owned, time.Now())
		}
	}
}

// PositionReporter is the owner side of replication as status sees it.
type PositionReporter interface {
	FollowerPositions(shard uint16) []replication.FollowerPosition
}

// ShardStatuses reports every shard this node owns or follows in the
// current topology.
func (n *Node) ShardStatuses() []ShardStatus {
	t := n.Topology()
	if t == nil {
		return nil
	}
	n.replMu.Lock()
	reporter, _ := n.replicas.(PositionReporter)
	n.replMu.Unlock()

	// Draining is sticky (a shard never stops draining), so a bus synced
	// to t's epoch or a later one no longer holds t's draining shards.
	n.mu.RLock()
	released := n.busEpoch >= t.Epoch
	n.mu.RUnlock()
	var out []ShardStatus
	for _, id := range t.OwnedBy(n.name) {
		s, _ := t.Shard(id)
		st := ShardStatus{ID: id, Role: "owner", Fenced: s.Fenced, Draining: s.Draining && released}
		n.fillRange(&st)
		st.Load = n.load.load(id)
		if reporter != nil {
			st.Followers = reporter.FollowerPositions(id)
		}
		out = append(out, st)
	}
	followers := map[uint16]replication.FollowerStatus{}
	for _, fs := range n.FollowerStatuses() {
		followers[fs.Shard] = fs
	}
	for _, id := range t.FollowedBy(n.name) {
		s, _ := t.Shard(id)
		st := ShardStatus{ID: id, Role: "follower", Draining: s.Draining}
		n.fillRange(&st)
		if fs, ok := followers[id]; ok {
			st.Lag, st.Connected = fs.Lag, fs.Connected
			if fs.LastErr != nil {
				st.Error = fs.LastErr.Error()
			}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b ShardStatus) int { return int(a.ID) - int(b.ID) })
	return out
}

func (n *Node) fillRange(st *ShardStatus) {
	// Daemon progress first: read before the log's range, it can only be
	// behind it, never ahead.
	count, next, ok := n.daemonProgress(st.ID)
	if l, err := n.logs.Log(st.ID); err == nil {
		st.First, st.Next = l.FirstSeq(), l.NextSeq()
	}
	st.Daemons = count
	if ok {
		st.DaemonNext = next
	} else if count > 0 {
		// Every feed halted: nothing to wait for (see daemonProgress).
		st.DaemonNext = st.Next
	}
}

// Promote applies t, in which this node must own every shard in shards (a
// standby taking over a failed owner's shards at a new epoch). The
// operator picked this node because its logs are the furthest along of the
// followers it could reach; Promote checks the topology says so and stops
// following those shards before owning them.
func (n *Node) Promote(t *topology.Topology, shards []uint16) error {
	for _, id := range shards {
		s, ok := t.Shard(id)
		if !ok || s.Owner != n.name {
			return fmt.Errorf("promote: topology epoch %d does not make %s the owner of shard %d", t.Epoch, n.name, id)
		}
	}
	return n.ApplyTopology(t)
}

// DrainStatus answers a drain request.
type DrainStatus struct {
	// Owned is how many shards the node still owns; the operator moves
	// them away, and the node is empty at 0.
	Owned int `json:"owned"`
	// Flushed says every event accepted before the drain is stored.
	Flushed bool `json:"flushed"`
}

// Drain stops the node accepting writes (refused as "moving", so clients
// go elsewhere once the operator moved the shards) and flushes what it
// accepted. Repeating it is harmless.
func (n *Node) Drain(ctx context.Context) (DrainStatus, error) {
	// Under appendGate, as a new epoch is installed: an ingest that passed
	// its writable check before the drain has its events in the log before
	// draining is set, so the flush below covers every acknowledged event.
	n.appendGate.Lock()
	n.mu.Lock()
	n.draining = true
	owned := 0
	if n.topo != nil {
		owned = len(n.topo.OwnedBy(n.name))
	}
	n.mu.Unlock()
	n.appendGate.Unlock()
	if err := n.bus.Flush(ctx); err != nil {
		return DrainStatus{Owned: owned}, fmt.Errorf("drain: %w", err)
	}
	return DrainStatus{Owned: owned, Flushed: true}, nil
}
