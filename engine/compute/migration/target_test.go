package migration_test

import (
	"bytes"
	"context"
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/compute/migration"
)

// restoreOnTarget sends a one-chunk snapshot of a fresh daemon of kind at
// cursor start to node b's target and returns the reply.
func restoreOnTarget(t *testing.T, c *cluster, kind string, start compute.Cursor) migration.Message {
	t.Helper()
	snap := &compute.Snapshot{Daemon: "d1", Kind: kind, Cursor: start}
	d, _ := c.nodes["b"].kinds.New(kind, "d1", nil)
	st, _ := d.Snapshot()
	snap.State = st
	return c.nodes["b"].target.HandleChunk("a", &migration.SnapshotChunk{Daemon: "d1", Index: 0, Total: 1, Data: snap.Encode()})
}

func evRange(from, to uint64) []compute.Event {
	var out []compute.Event
	for s := from; s < to; s++ {
		out = append(out, compute.Event{Seq: s, Payload: []byte{byte(s)}})
	}
	return out
}

// Release note "Lost events on partial replay failure" (drain_pending) and
// its test-hygiene item: when a delivery fails mid-drain the undelivered
// tail is kept and the next drain resumes from it, and the delivered prefix
// is NOT redelivered.
func TestDrainPendingLostEventsOnPartialReplayFailure(t *testing.T) {
	c := newCluster(t, migration.Config{}, "a", "b")
	tg, p := c.nodes["b"].target, c.nodes["b"].plan
	if _, ok := restoreOnTarget(t, c, "chain", compute.CursorAt(0)).(*migration.RestoreComplete); !ok {
		t.Fatal("restore failed")
	}
	p.failSeq[5] = true

	reply := tg.HandleEvents(&migration.BufferedEvents{Daemon: "d1", Events: evRange(0, 10)})
	if f, ok := reply.(*migration.Failed); !ok || f.Reason != migration.ReasonStateFailed {
		t.Fatalf("reply %#v, want Failed(StateFailed)", reply)
	}
	cur, _ := tg.Cursor("d1")
	if cur.Next() != 5 {
		t.Fatalf("cursor %d after failure at 5, want the prefix 0..4 applied", cur.Next())
	}
	if got, want := tg.Pending("d1"), []uint64{5, 6, 7, 8, 9}; !reflect.DeepEqual(got, want) {
		t.Fatalf("pending tail %v, want %v (tail kept)", got, want)
	}

	// The next drain (an empty batch) resumes at the failed event.
	reply = tg.HandleEvents(&migration.BufferedEvents{Daemon: "d1"})
	if rc, ok := reply.(*migration.ReplayComplete); !ok || rc.Next != 10 {
		t.Fatalf("reply %#v, want ReplayComplete at 10", reply)
	}
	if got, want := p.Calls(), []uint64{0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Process calls %v, want %v (prefix not redelivered, tail resumed)", got, want)
	}
	if len(tg.Pending("d1")) != 0 {
		t.Fatal("pending not empty after resume")
	}
	// The state equals applying 0..9 once each, in order.
	h := compute.NewHost("ref", "chain", nil, mustNew(t, "chain"), compute.CursorAt(0), compute.HostConfig{})
	deliverAll(t, h, evRange(0, 10))
	want, _ := h.Snapshot()
	got := snapshotOnTarget(t, c, "d1")
	if !bytes.Equal(got, want.State) {
		t.Fatal("target state differs from applying each event exactly once")
	}
}

func mustNew(t *testing.T, kind string) compute.MeshDaemon {
	d, err := kinds(t, &plan{}).New(kind, "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func snapshotOnTarget(t *testing.T, c *cluster, id string) []byte {
	t.Helper()
	tg := c.nodes["b"].target
	cur, _ := tg.Cursor(id)
	if reply := tg.HandleCutover(&migration.Cutover{Daemon: id, Next: cur.Next(), Exhausted: cur.Exhausted()}); reply == nil {
		t.Fatal("no cutover reply")
	}
	if _, ok := tg.HandleActivate(&migration.Activate{Daemon: id}).(*migration.ActivateAck); !ok {
		t.Fatal("activate failed")
	}
	h, err := c.nodes["b"].hosts.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	s, err := h.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return s.State
}

func TestTargetReplaysStrictlyInSeqOrder(t *testing.T) {
	c := newCluster(t, migration.Config{}, "a", "b")
	tg, p := c.nodes["b"].target, c.nodes["b"].plan
	restoreOnTarget(t, c, "chain", compute.CursorAt(100))
	evs := evRange(100, 106)
	tg.HandleEvents(&migration.BufferedEvents{Daemon: "d1", Events: []compute.Event{evs[3], evs[5], evs[1]}})
	if len(p.Calls()) != 0 {
		t.Fatalf("applied %v before seq 100 arrived", p.Calls())
	}
	tg.HandleEvents(&migration.BufferedEvents{Daemon: "d1", Events: []compute.Event{evs[0], evs[2], evs[0]}})
	if got, want := p.Calls(), []uint64{100, 101, 102, 103}; !reflect.DeepEqual(got, want) {
		t.Fatalf("applied %v, want %v", got, want)
	}
	if got := tg.Pending("d1"); !reflect.DeepEqual(got, []uint64{105}) {
		t.Fatalf("pending %v, want [105] (waiting for 104)", got)
	}
	// Stale events (already applied) are dropped, not reapplied.
	tg.HandleEvents(&migration.BufferedEvents{Daemon: "d1", Events: []compute.Event{evs[1], evs[4]}})
	if got, want := p.Calls(), []uint64{100, 101, 102, 103, 104, 105}; !reflect.DeepEqual(got, want) {
		t.Fatalf("applied %v, want %v", got, want)
	}
}

func TestTargetDrainSaturatesAtMaxSeq(t *testing.T) {
	c := newCluster(t, migration.Config{}, "a", "b")
	tg, p := c.nodes["b"].target, c.nodes["b"].plan
	restoreOnTarget(t, c, "chain", compute.CursorAt(math.MaxUint64-1))
	reply := tg.HandleEvents(&migration.BufferedEvents{Daemon: "d1", Events: []compute.Event{
		{Seq: 0}, {Seq: math.MaxUint64}, {Seq: math.MaxUint64 - 1},
	}})
	rc, ok := reply.(*migration.ReplayComplete)
	if !ok || rc.Next != math.MaxUint64 || !rc.Exhausted {
		t.Fatalf("reply %#v, want saturated cursor", reply)
	}
	if got, want := p.Calls(), []uint64{math.MaxUint64 - 1, math.MaxUint64}; !reflect.DeepEqual(got, want) {
		t.Fatalf("applied %v, want %v (seq 0 must not follow max)", got, want)
	}
	if len(tg.Pending("d1")) != 0 {
		t.Fatalf("pending %v", tg.Pending("d1"))
	}
}

func TestTargetHandlersTolerateResends(t *testing.T) {
	c := newCluster(t, migration.Config{}, "a", "b")
	tg := c.nodes["b"].target
	restoreOnTarget(t, c, "chain", compute.CursorAt(0))
	tg.HandleEvents(&migration.BufferedEvents{Daemon: "d1", Events: evRange(0, 3)})
	if _, ok := tg.HandleCutover(&migration.Cutover{Daemon: "d1", Next: 2}).(*migration.Failed); !ok {
		t.Fatal("cutover at a cursor the target is not at was accepted")
	}
	for i := 0; i < 2; i++ {
		if _, ok := tg.HandleCutover(&migration.Cutover{Daemon: "d1", Next: 3}).(*migration.ReplayComplete); !ok {
			t.Fatalf("cutover resend %d refused", i)
		}
	}
	// A BufferedEvents resend after cutover must not reopen replay.
	reply := tg.HandleEvents(&migration.BufferedEvents{Daemon: "d1", Events: evRange(3, 4)})
	if rc, ok := reply.(*migration.ReplayComplete); !ok || rc.Next != 3 {
		t.Fatalf("post-cutover events reply %#v, want ReplayComplete at 3 (not applied)", reply)
	}
	a1 := tg.HandleActivate(&migration.Activate{Daemon: "d1"})
	a2 := tg.HandleActivate(&migration.Activate{Daemon: "d1"})
	if !reflect.DeepEqual(a1, a2) {
		t.Fatalf("activate resend %#v != %#v", a2, a1)
	}
	if ack, ok := a1.(*migration.ActivateAck); !ok || ack.Next != 3 {
		t.Fatalf("ack %#v", a1)
	}
	tg.HandleCleanup(&migration.Cleanup{Daemon: "d1"})
	if _, ok := tg.Phase("d1"); ok {
		t.Fatal("record kept after cleanup")
	}
	if _, err := c.nodes["b"].hosts.Get("d1"); err != nil {
		t.Fatalf("activated daemon gone after cleanup: %v", err)
	}
}

func TestMalformedRequestGetsFailedReply(t *testing.T) {
	c := newCluster(t, migration.Config{}, "a", "b")
	n := &migration.Node{Target: c.nodes["b"].target}
	reply, err := migration.Decode(n.Handle(context.Background(), "a", []byte{0xee, 1, 2}))
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := reply.(*migration.Failed); !ok || f.Reason != migration.ReasonStateFailed {
		t.Fatalf("reply %#v", reply)
	}
	if _, err := migration.Decode([]byte{0xee}); !errors.Is(err, migration.ErrMalformed) {
		t.Fatalf("decode: %v", err)
	}
}

// reentrant calls back into the target while its daemon code runs; if the
// target held its migration lock (or the Hosts lock) across Process or
// Restore, this would deadlock.
type reentrant struct {
	tg    *migration.Target
	hosts *compute.Hosts
	seen  int
}

func (r *reentrant) Name() string   { return "reentrant" }
func (r *reentrant) Stateful() bool { return true }
func (r *reentrant) Process(ev compute.Event) ([][]byte, error) {
	r.tg.Pending("d1")
	r.tg.Phase("d1")
	r.hosts.IDs()
	r.seen++
	return nil, nil
}
func (r *reentrant) Snapshot() ([]byte, error) { return []byte{}, nil }
func (r *reentrant) Restore([]byte) error {
	r.tg.Phase("d1")
	r.hosts.IDs()
	return nil
}

func TestTargetHoldsNoLockWhileDaemonCodeRuns(t *testing.T) {
	k := compute.NewKinds()
	hosts := compute.NewHosts()
	var tg *migration.Target
	var d *reentrant
	_ = k.Register("reentrant", func(string, []byte) (compute.MeshDaemon, error) {
		d = &reentrant{tg: tg, hosts: hosts}
		return d, nil
	})
	tg = migration.NewTarget(k, hosts, compute.HostConfig{})
	tg.SetReady(true)
	snap := &compute.Snapshot{Daemon: "d1", Kind: "reentrant", State: []byte{}}
	if _, ok := tg.HandleChunk("a", &migration.SnapshotChunk{Daemon: "d1", Total: 1, Data: snap.Encode()}).(*migration.RestoreComplete); !ok {
		t.Fatal("restore failed")
	}
	if _, ok := tg.HandleEvents(&migration.BufferedEvents{Daemon: "d1", Events: evRange(0, 4)}).(*migration.ReplayComplete); !ok {
		t.Fatal("replay failed")
	}
	// Out of order: the second batch goes through the pending set.
	tg.HandleEvents(&migration.BufferedEvents{Daemon: "d1", Events: evRange(5, 7)})
	tg.HandleEvents(&migration.BufferedEvents{Daemon: "d1", Events: evRange(4, 5)})
	if d.seen != 7 {
		t.Fatalf("daemon saw %d events, want 7", d.seen)
	}
}

// handle sends msg to node b's migration endpoint as node from and decodes
// the reply (nil for none).
func handle(t *testing.T, c *cluster, from migration.NodeID, msg migration.Message) migration.Message {
	t.Helper()
	n := &migration.Node{Target: c.nodes["b"].target, Migrator: c.nodes["b"].migrator}
	req, err := migration.Encode(msg)
	if err != nil {
		t.Fatal(err)
	}
	raw := n.Handle(context.Background(), from, req)
	if len(raw) == 0 {
		return nil
	}
	reply, err := migration.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	return reply
}

// Only the node that sent chunk 0 may drive an inbound migration: events,
// cutover, activation and aborts from another node for the same daemon are
// refused (or, for an abort, ignored) and leave the migration untouched.
func TestInboundMigrationIsDrivenOnlyByItsSource(t *testing.T) {
	c := newCluster(t, migration.Config{}, "a", "b", "x")
	d, _ := c.nodes["b"].kinds.New("chain", "d1", nil)
	st, _ := d.Snapshot()
	snap := &compute.Snapshot{Daemon: "d1", Kind: "chain", State: st}
	if _, ok := handle(t, c, "a", &migration.SnapshotChunk{Daemon: "d1", Total: 1, Data: snap.Encode()}).(*migration.RestoreComplete); !ok {
		t.Fatal("restore from a failed")
	}
	for _, m := range []migration.Message{
		&migration.BufferedEvents{Daemon: "d1", Events: evRange(0, 3)},
		&migration.Cutover{Daemon: "d1", Next: 0},
		&migration.Activate{Daemon: "d1"},
	} {
		if f, ok := handle(t, c, "x", m).(*migration.Failed); !ok || f.Reason != migration.ReasonAlreadyMigrating {
			t.Fatalf("%T from x: reply %#v, want Failed(AlreadyMigrating)", m, f)
		}
	}
	if reply := handle(t, c, "x", &migration.Failed{Daemon: "d1", Reason: migration.ReasonAborted}); reply != nil {
		t.Fatalf("abort from x: reply %#v", reply)
	}
	if ph, ok := c.nodes["b"].target.Phase("d1"); !ok || ph != migration.PhaseReplay {
		t.Fatalf("after x's messages the migration is %v (present %v), want untouched in Replay", ph, ok)
	}
	if cur, _ := c.nodes["b"].target.Cursor("d1"); cur.Next() != 0 {
		t.Fatalf("x's events were applied: cursor %d", cur.Next())
	}
	if rc, ok := handle(t, c, "a", &migration.BufferedEvents{Daemon: "d1", Events: evRange(0, 3)}).(*migration.ReplayComplete); !ok || rc.Next != 3 {
		t.Fatalf("events from the source: %#v, want ReplayComplete at 3", rc)
	}
	if reply := handle(t, c, "a", &migration.Failed{Daemon: "d1", Reason: migration.ReasonAborted}); reply != nil {
		t.Fatalf("abort from a: reply %#v", reply)
	}
	if _, ok := c.nodes["b"].target.Phase("d1"); ok {
		t.Fatal("the source's abort did not discard the inbound migration")
	}
}
