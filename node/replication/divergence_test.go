package replication

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/redex"
)

// divergedPair builds an owner log holding [0, ownerN) and a follower log
// holding the owner's first common entries followed by extra entries of
// its own (an old owner's writes the new owner never got).
func divergedPair(t *testing.T, ownerN, common, extra int) (ol, fl *redex.Log) {
	t.Helper()
	ol = openLog(t, redex.Options{})
	appendN(t, ol, 0, 0, common)
	fl = openLog(t, redex.Options{Dir: t.TempDir()})
	prefix, err := ol.Read(0, common)
	if err != nil {
		t.Fatal(err)
	}
	if err := fl.AppendReplicatedBatch(prefix); err != nil {
		t.Fatal(err)
	}
	for range extra {
		if _, err := fl.Append([]byte("written by the old owner, never replicated")); err != nil {
			t.Fatal(err)
		}
	}
	appendN(t, ol, 0, common, ownerN-common)
	return ol, fl
}

// resyncRecorder is a FollowerOptions.Resync that records each resync and
// the follower log's bounds at the call.
type resyncRecorder struct {
	mu   sync.Mutex
	got  []Resync
	logs [][2]uint64
}

func (r *resyncRecorder) hook(fl *redex.Log) func(Resync) {
	return func(rs Resync) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.got = append(r.got, rs)
		r.logs = append(r.logs, [2]uint64{fl.FirstSeq(), fl.NextSeq()})
	}
}

// TestDivergedTailIsResyncedToTheOwnersLog: the follower's last entry
// (seq 7) is not the owner's. With Resync its subscription is answered
// with a resync, not a refusal: it drops its log, gets the owner's daemon
// snapshots, and then holds exactly the owner's entries and follows live.
func TestDivergedTailIsResyncedToTheOwnersLog(t *testing.T) {
	k := newKeys(t)
	base := newSource(2)
	ol, fl := divergedPair(t, 15, 5, 3)
	base.add(0, ol)
	ow := startOwner(t, k, base, "", func(o *ServerOptions) {
		o.Source = snapSource{source: base, snaps: [][]byte{[]byte("owner daemon state")}}
	})
	var rec resyncRecorder
	f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(2), Token: k.token(t, nil), Resync: rec.hook(fl)})
	waitCaughtUp(t, f, fl, ol)
	assertReplica(t, fl, ol, 0)
	appendN(t, ol, 0, 15, 10)
	waitCaughtUp(t, f, fl, ol)
	assertReplica(t, fl, ol, 0)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.got) != 1 || rec.got[0].First != 0 || rec.got[0].OwnerNext != 15 || !rec.got[0].Diverged ||
		len(rec.got[0].Daemons) != 1 || string(rec.got[0].Daemons[0]) != "owner daemon state" {
		t.Fatalf("resyncs %+v, want one from the owner's head 0 (next 15) with its daemon snapshot", rec.got)
	}
	if rec.logs[0] != [2]uint64{0, 0} {
		t.Fatalf("at the resync callback the follower log was [%d, %d), want empty at 0", rec.logs[0][0], rec.logs[0][1])
	}
	if st := f.Status(); st.Resyncs != 1 || ow.srv.DivergedResyncs() != 1 || ow.srv.Resyncs() != 1 {
		t.Fatalf("resyncs: follower %d, owner %d (diverged %d); want 1, 1, 1", st.Resyncs, ow.srv.Resyncs(), ow.srv.DivergedResyncs())
	}
}

// TestFollowerAheadOfTheOwnerIsResynced: the follower holds seqs 5..7 the
// owner never had (its next seq 8 is beyond the owner's 5). It is resynced
// and holds the owner's entries 5.. as the owner writes them.
func TestFollowerAheadOfTheOwnerIsResynced(t *testing.T) {
	k := newKeys(t)
	src := newSource(2)
	ol, fl := divergedPair(t, 5, 5, 3)
	src.add(0, ol)
	ow := startOwner(t, k, src, "", nil)
	var rec resyncRecorder
	f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(2), Token: k.token(t, nil), Resync: rec.hook(fl)})
	waitFor(t, "a resync", func() bool { return f.Status().Resyncs == 1 })
	waitCaughtUp(t, f, fl, ol)
	appendN(t, ol, 0, 5, 10)
	waitCaughtUp(t, f, fl, ol)
	assertReplica(t, fl, ol, 0)
	if ow.srv.DivergedResyncs() != 1 {
		t.Fatalf("owner answered %d diverged resyncs, want 1", ow.srv.DivergedResyncs())
	}
}

// TestDivergedFollowerWhoseLogStartsAboveTheOwnersHead: seqs never go
// back, so a follower whose log starts at 10 keeps starting there: it drops
// every entry it held and skips the owner's entries below 10, as though its
// own retention had pruned them.
func TestDivergedFollowerWhoseLogStartsAboveTheOwnersHead(t *testing.T) {
	k := newKeys(t)
	src := newSource(2)
	ol := openLog(t, redex.Options{})
	src.add(0, ol)
	appendN(t, ol, 0, 0, 20)
	fl := openLog(t, redex.Options{Dir: t.TempDir()})
	if err := fl.ResetTo(10); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := fl.Append([]byte("not the owner's")); err != nil {
			t.Fatal(err)
		}
	}
	ow := startOwner(t, k, src, "", nil)
	var rec resyncRecorder
	f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(2), Token: k.token(t, nil), Resync: rec.hook(fl)})
	waitCaughtUp(t, f, fl, ol)
	if fl.FirstSeq() != 10 {
		t.Fatalf("follower log starts at %d, want 10", fl.FirstSeq())
	}
	assertReplica(t, fl, ol, 10)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.got) != 1 || rec.logs[0] != [2]uint64{10, 10} {
		t.Fatalf("resyncs %+v with logs %v, want one with the log empty at 10", rec.got, rec.logs)
	}
}

// TestDivergedSubscribeWireAnswers pins compatibility: a plain subscribe
// from a diverged follower (one without Resync, or from before divergence
// repair) is refused with diverged as before; a resync-subscribe gets a
// resync to the owner's head.
func TestDivergedSubscribeWireAnswers(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	ol := openLog(t, redex.Options{})
	src.add(0, ol)
	appendN(t, ol, 0, 0, 30)
	ow := startOwner(t, k, src, "", nil)
	tok, _ := k.token(t, nil)()
	own, _ := ol.Get(9)
	wrong := idOf(own)
	wrong.CRC++
	for _, tc := range []struct {
		name   string
		resync bool
		sub    subscribeMsg
		want   msgKind
	}{
		{"plain, last entry differs", false, subscribeMsg{From: 10, HasPrev: true, Prev: wrong}, kindRefuse},
		{"plain, ahead without a checksum", false, subscribeMsg{From: 40}, kindRefuse},
		{"plain, matching", false, subscribeMsg{From: 10, HasPrev: true, Prev: idOf(own)}, kindAccept},
		{"resync, last entry differs", true, subscribeMsg{From: 10, HasPrev: true, Prev: wrong}, kindResync},
		{"resync, ahead", true, subscribeMsg{From: 40, HasPrev: true, Prev: wrong}, kindResync},
		{"resync, matching", true, subscribeMsg{From: 10, HasPrev: true, Prev: idOf(own)}, kindAccept},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", ow.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			sub := tc.sub
			sub.Epoch, sub.Name, sub.Token = 1, "raw", tok
			msg := appendSubscribe(nil, sub)
			if tc.resync {
				msg = appendResyncSubscribe(nil, sub)
			}
			pw := newPacketWriter(conn, 0, 4096)
			if err := pw.send(msg); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			msgs, err := newPacketReader(conn).next()
			if err != nil || len(msgs) != 1 {
				t.Fatalf("answer: %d messages, %v", len(msgs), err)
			}
			if got := msgKind(msgs[0][0]); got != tc.want {
				t.Fatalf("answered with message kind %d, want %d", got, tc.want)
			}
			switch tc.want {
			case kindRefuse:
				m, err := decodeMessage(msgs[0])
				if err != nil || m.refuse.Code != RefuseDiverged {
					t.Fatalf("refusal %+v (%v), want diverged", m.refuse, err)
				}
				var div *DivergedError
				if !errors.As(refusalError(m.refuse, 1, sub.From), &div) {
					t.Fatal("a diverged refusal does not make a *DivergedError")
				}
			case kindResync:
				r, err := decodeResync(msgs[0])
				if err != nil || r.First != 0 || r.OwnerNext != 30 {
					t.Fatalf("resync %+v (%v), want the owner's head 0, next 30", r, err)
				}
			}
		})
	}
}
