package replication

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/redex"
)

// snapSource is a source whose node keeps daemon state: it hands out
// fixed snapshots.
type snapSource struct {
	*source
	snaps [][]byte
}

func (s snapSource) DaemonSnapshots(uint16) ([][]byte, error) { return s.snaps, nil }

// TestLaggedFollowerWithResyncStartsOverFromTheOwnersHead: the owner
// retains only [90, 100); a follower holding [0, 5) is lagged. With
// FollowerOptions.Resync it is reset to the owner's head, gets the owner's
// daemon snapshots (one larger than a packet, so it is chunked) before any
// entry, then holds exactly the owner's retained entries and follows live.
func TestLaggedFollowerWithResyncStartsOverFromTheOwnersHead(t *testing.T) {
	k := newKeys(t)
	base := newSource(1)
	big := make([]byte, 300<<10)
	for i := range big {
		big[i] = byte(rand.Uint32())
	}
	src := snapSource{source: base, snaps: [][]byte{big, []byte("small snapshot")}}
	ol := openLog(t, redex.Options{Retention: redex.Retention{MaxEvents: 10}})
	base.add(0, ol)
	appendN(t, ol, 0, 0, 100)
	fl := openLog(t, redex.Options{})
	for i := range 5 {
		e, _ := ol.Get(uint64(i))
		if err := fl.AppendReplicated(e); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ol.Sweep(time.Now()); err != nil {
		t.Fatal(err)
	}
	ow := startOwner(t, k, base, "", func(o *ServerOptions) { o.Source = src })

	var (
		mu  sync.Mutex
		got []Resync
	)
	f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil),
		Resync: func(r Resync) {
			// Called after the reset and before any entry is appended.
			if fl.FirstSeq() != r.First || fl.NextSeq() != r.First {
				t.Errorf("at the resync callback the log is [%d, %d), want empty at %d", fl.FirstSeq(), fl.NextSeq(), r.First)
			}
			mu.Lock()
			got = append(got, r)
			mu.Unlock()
		}})
	waitCaughtUp(t, f, fl, ol)
	assertReplica(t, fl, ol, 90)
	if fl.FirstSeq() != 90 {
		t.Fatalf("follower log starts at %d, want the owner's head 90", fl.FirstSeq())
	}
	mu.Lock()
	if len(got) != 1 || got[0].First != 90 || got[0].OwnerNext != 100 || got[0].Diverged || len(got[0].Daemons) != 2 ||
		!bytes.Equal(got[0].Daemons[0], big) || string(got[0].Daemons[1]) != "small snapshot" {
		t.Fatalf("resync callbacks %d (first %+v), want one at head 90 with both snapshots intact", len(got), got)
	}
	mu.Unlock()
	if st := f.Status(); st.Resyncs != 1 || ow.srv.Resyncs() != 1 {
		t.Fatalf("resyncs: follower %d, owner %d; want 1 and 1", st.Resyncs, ow.srv.Resyncs())
	}

	// Live from there, and a reconnection resumes normally (no resync).
	appendN(t, ol, 0, 100, 20)
	waitCaughtUp(t, f, fl, ol)
	assertReplica(t, fl, ol, 90)
	if f.Status().Resyncs != 1 {
		t.Fatal("a caught-up follower was resynced again")
	}
}

// A resync-subscribe whose position the owner still retains is answered
// with a plain accept: the owner resyncs only what it cannot stream.
func TestResyncSubscribeWithinRetentionIsAPlainAccept(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	ol := openLog(t, redex.Options{})
	src.add(0, ol)
	appendN(t, ol, 0, 0, 30)
	ow := startOwner(t, k, src, "", nil)
	conn, err := net.Dial("tcp", ow.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tok, _ := k.token(t, nil)()
	pw := newPacketWriter(conn, 0, 4096)
	if err := pw.send(appendResyncSubscribe(nil, subscribeMsg{Shard: 0, From: 0, Epoch: 1, Name: "raw", Token: tok})); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	msgs, err := newPacketReader(conn).next()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("answer: %d messages, %v", len(msgs), err)
	}
	m, err := decodeMessage(msgs[0])
	if err != nil || m.kind != kindAccept || m.accept.From != 0 || m.accept.OwnerNext != 30 {
		t.Fatalf("answer %+v (%v), want accept from 0", m, err)
	}
	if ow.srv.Resyncs() != 0 {
		t.Fatal("owner resynced a follower it could serve from its position")
	}
}

func FuzzDecodeResyncMessages(f *testing.F) {
	f.Add(appendResync(nil, resyncMsg{Shard: 1, Epoch: 2, First: 3, OwnerNext: 4, Daemons: 1}))
	f.Add(appendChunk(nil, chunkMsg{Index: 0, Total: 10, Offset: 2, Data: []byte("abc")}))
	f.Add(appendResyncSubscribe(nil, subscribeMsg{Shard: 1, From: 2, Epoch: 3, Name: "n", Token: []byte("t")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := decodeResync(b); err == nil && !bytes.Equal(appendResync(nil, m), b) {
			t.Fatalf("resync %+v does not re-encode to its input", m)
		}
		if m, err := decodeChunk(b); err == nil {
			if !bytes.Equal(appendChunk(nil, m), b) {
				t.Fatalf("chunk %+v does not re-encode to its input", m)
			}
			a := snapshotAssembler{want: 1}
			_ = a.add(m)
		}
		_, _ = decodeResyncSubscribe(b)
	})
}

// TestLiveFollowerLaggedByRetentionResyncs: a follower that stalls while
// the owner floods and prunes is refused as lagged mid-stream; with
// Resync it starts over from the owner's head and then holds exactly
// the owner's entries from there, with no gap and no duplicate.
func TestLiveFollowerLaggedByRetentionResyncs(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	ol := openLog(t, redex.Options{Retention: redex.Retention{MaxEvents: 5}})
	src.add(0, ol)
	appendN(t, ol, 0, 0, 5)
	ow := startOwner(t, k, src, "", nil)
	fl := openLog(t, redex.Options{})
	block := make(chan struct{})
	var once sync.Once
	blocked := make(chan struct{})
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			_ = c.(*net.TCPConn).SetReadBuffer(16 << 10)
		}
		return c, err
	}
	var resyncs atomic.Int64
	f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil), Dial: dial,
		Resync: func(Resync) { resyncs.Add(1) },
		beforeAppend: func(int) {
			once.Do(func() { close(blocked); <-block })
		}})
	<-blocked
	big := make([]byte, 1024)
	for range 12000 {
		if _, err := ol.Append(big); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ol.Sweep(time.Now()); err != nil {
		t.Fatal(err)
	}
	close(block)
	waitFor(t, "a resync", func() bool { return resyncs.Load() > 0 })
	appendN(t, ol, 0, 12005, 10)
	waitCaughtUp(t, f, fl, ol)
	if fl.FirstSeq() <= 5 {
		t.Fatalf("follower log starts at %d: it was not reset to the owner's head", fl.FirstSeq())
	}
	assertReplica(t, fl, ol, max(fl.FirstSeq(), ol.FirstSeq()))
	if f.Err() != nil {
		t.Fatalf("follower stopped: %v", f.Err())
	}
}

// An owner's chunk announces a snapshot's size; the follower must not
// reserve that size before the bytes arrive, or a few small packets
// claiming MaxDaemonSnapshot each make it hold maxResyncBytes. The
// assembler still rebuilds a snapshot sent in pieces exactly.
func TestResyncAssemblerHoldsOnlyTheBytesReceived(t *testing.T) {
	a := snapshotAssembler{want: 1}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := a.add(chunkMsg{Index: 0, Total: MaxDaemonSnapshot, Data: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("a chunk carrying 1 byte of a snapshot announced at %d bytes allocated %d bytes", MaxDaemonSnapshot, got)
	}
	if a.done() {
		t.Fatal("done after 1 byte of the snapshot")
	}

	want := bytes.Repeat([]byte("snapshot"), 1000)
	b := snapshotAssembler{want: 2}
	for off := 0; off < len(want); off += 700 {
		end := min(off+700, len(want))
		if err := b.add(chunkMsg{Index: 0, Total: uint32(len(want)), Offset: uint32(off), Data: want[off:end]}); err != nil {
			t.Fatal(err)
		}
	}
	if b.done() {
		t.Fatal("done with one of two snapshots")
	}
	if err := b.add(chunkMsg{Index: 1, Total: 1, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if !b.done() || !bytes.Equal(b.snaps[0], want) || string(b.snaps[1]) != "x" {
		t.Fatalf("reassembled %d and %q, want %d bytes and x", len(b.snaps[0]), b.snaps[1], len(want))
	}
	if err := b.add(chunkMsg{Index: 1, Total: 1, Data: []byte("y")}); err == nil {
		t.Fatal("a chunk after the last snapshot was accepted")
	}
}
