package replication

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/redex"
	"github.com/purplerain/mesh-operator/engine/wire"
)

func TestBackfillThenLiveHasNoGapAndNoDuplicateAtTheSeam(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	// A small tail buffer makes the owner's live tail overflow, so the
	// stream also switches from live back to reads and again to live.
	ol := openLog(t, redex.Options{TailBuffer: 16})
	src.add(0, ol)
	appendN(t, ol, 0, 0, 3000) // more than one read batch and the tail buffer
	ow := startOwner(t, k, src, "", func(o *ServerOptions) { o.ReadBatch = 100 })

	fl := openLog(t, redex.Options{})
	// A local tail on the follower sees every replicated entry once.
	ft, err := fl.Tail(0)
	if err != nil {
		t.Fatal(err)
	}
	defer ft.Close()
	var seen []uint64
	seenDone := make(chan struct{})
	go func() {
		defer close(seenDone)
		for e := range ft.C() {
			seen = append(seen, e.Seq)
		}
	}()

	f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil)})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // live appends race the backfill
		defer wg.Done()
		for i := 3000; i < 6000; i += 100 {
			appendN(t, ol, 0, i, 100)
			time.Sleep(time.Millisecond)
		}
	}()
	wg.Wait()
	waitCaughtUp(t, f, fl, ol)
	assertReplica(t, fl, ol, 0)
	if fl.NextSeq() != 6000 {
		t.Fatalf("follower next %d, want 6000", fl.NextSeq())
	}
	ft.Close()
	<-seenDone
	for i, s := range seen {
		if s != uint64(i) {
			t.Fatalf("follower's own tail saw seq %d at position %d: gap or duplicate", s, i)
		}
	}
}

func TestFollowerRestartResumesFromItsOwnNextSeq(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	ol := openLog(t, redex.Options{})
	src.add(3, ol)
	appendN(t, ol, 3, 0, 100)
	ow := startOwner(t, k, src, "", nil)

	dir := t.TempDir()
	fl, err := redex.Open(redex.Options{Dir: dir, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	f, err := StartFollower(FollowerOptions{Name: "f", Shard: 3, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, f, fl, ol)
	f.Close()
	if err := fl.Close(); err != nil {
		t.Fatal(err)
	}

	appendN(t, ol, 3, 100, 50)
	fl = openLog(t, redex.Options{Dir: dir})
	if fl.NextSeq() != 100 {
		t.Fatalf("reopened follower log next %d, want 100", fl.NextSeq())
	}
	// Subscribing from anything but 100 would fail: below, the owner's
	// re-sent entries are refused by AppendReplicated (a terminal error);
	// above, the owner refuses with Diverged.
	f2 := startFollower(t, FollowerOptions{Name: "f", Shard: 3, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil), SyncBeforeAck: true})
	waitCaughtUp(t, f2, fl, ol)
	assertReplica(t, fl, ol, 0)
	if err := f2.Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the owner to see the follower's position", func() bool {
		pos := ow.srv.FollowerPositions(3)
		return len(pos) == 1 && pos[0].Name == "f" && pos[0].Next == 150 && pos[0].Connected
	})
}

func TestOwnerRestartFollowerReconnectsAndContinues(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	ol := openLog(t, redex.Options{})
	src.add(1, ol)
	appendN(t, ol, 1, 0, 200)
	ow := startOwner(t, k, src, "", nil)
	fl := openLog(t, redex.Options{})
	f := startFollower(t, FollowerOptions{Shard: 1, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil)})
	waitCaughtUp(t, f, fl, ol)

	ow.stop()
	waitFor(t, "follower to notice the owner left", func() bool { return !f.Status().Connected })
	appendN(t, ol, 1, 200, 300) // written while no owner server runs
	ow2 := startOwner(t, k, src, ow.addr, nil)
	waitCaughtUp(t, f, fl, ol)
	appendN(t, ol, 1, 500, 100) // and live again after the reconnection
	waitCaughtUp(t, f, fl, ol)
	assertReplica(t, fl, ol, 0)
	if st := f.Status(); st.Subscriptions < 2 || !st.Connected || st.Lag != 0 {
		t.Fatalf("status %+v: want >= 2 subscriptions, connected, no lag", st)
	}
	_ = ow2
}

func TestLaggedFollowerGetsTypedErrorAndAppendsNothing(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	ol := openLog(t, redex.Options{Retention: redex.Retention{MaxEvents: 10}})
	src.add(0, ol)
	appendN(t, ol, 0, 0, 100)
	if _, err := ol.Sweep(time.Now()); err != nil {
		t.Fatal(err)
	}
	ow := startOwner(t, k, src, "", nil)

	fl := openLog(t, redex.Options{})
	f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil)})
	<-f.Done()
	var lag *LaggedError
	if err := f.Err(); !errors.As(err, &lag) || lag.From != 0 || lag.OwnerFirst != 90 || !errors.Is(err, redex.ErrLagged) {
		t.Fatalf("follower error %v, want *LaggedError{From: 0, OwnerFirst: 90} matching redex.ErrLagged", err)
	}
	if fl.NextSeq() != 0 {
		t.Fatalf("lagged follower appended up to %d", fl.NextSeq())
	}

	// A follower log started at the owner's first retained seq replicates.
	fl2 := openLog(t, redex.Options{FirstSeq: lag.OwnerFirst})
	f2 := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl2, Epoch: constEpoch(1), Token: k.token(t, nil)})
	waitCaughtUp(t, f2, fl2, ol)
	assertReplica(t, fl2, ol, 90)
}

func TestLiveFollowerLaggedByRetentionStops(t *testing.T) {
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
	// A small receive buffer on the follower: the owner cannot push the
	// flood below into the sockets, so most of it is still unsent when
	// retention prunes it.
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			_ = c.(*net.TCPConn).SetReadBuffer(16 << 10)
		}
		return c, err
	}
	f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil), Dial: dial,
		beforeAppend: func(int) {
			once.Do(func() { close(blocked); <-block })
		}})
	<-blocked // the follower holds the first batch and appends nothing yet
	// Flood the owner (far more than the socket buffers hold) so the
	// follower's live tail overflows, then prune: the owner's read
	// catch-up finds its next seq gone.
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
	<-f.Done()
	var lag *LaggedError
	if err := f.Err(); !errors.As(err, &lag) {
		t.Fatalf("follower error %v, want *LaggedError", err)
	}
	// What it appended is a gap-free prefix of the owner's history.
	if n := fl.NextSeq(); n == 0 || n > ol.FirstSeq() {
		t.Fatalf("follower next %d; want a prefix below the owner's first retained %d", n, ol.FirstSeq())
	}
	if lag.OwnerFirst != ol.FirstSeq() {
		t.Fatalf("lagged error says owner first %d, owner has %d", lag.OwnerFirst, ol.FirstSeq())
	}
}

func TestOwnerRefusesSubscriptionFromOlderEpoch(t *testing.T) {
	k := newKeys(t)
	src := newSource(5)
	ol := openLog(t, redex.Options{})
	src.add(0, ol)
	appendN(t, ol, 0, 0, 10)
	ow := startOwner(t, k, src, "", nil)
	fl := openLog(t, redex.Options{})
	var ep epochVar
	ep.v.Store(4)
	f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: ep.get, Token: k.token(t, nil)})
	se := lastErrAs[*StaleEpochError](t, f)
	if se.Refuser != SideOwner || se.Follower != 4 || se.Owner != 5 {
		t.Fatalf("stale epoch error %+v, want owner refusing follower 4 < owner 5", se)
	}
	if fl.NextSeq() != 0 || f.Err() != nil {
		t.Fatalf("after refusal: follower next %d, err %v; want nothing appended, still retrying", fl.NextSeq(), f.Err())
	}
	ep.v.Store(5) // the topology push arrives
	waitCaughtUp(t, f, fl, ol)
}

func TestFollowerRefusesOwnerAtOlderEpoch(t *testing.T) {
	k := newKeys(t)
	src := newSource(3)
	ol := openLog(t, redex.Options{})
	src.add(0, ol)
	appendN(t, ol, 0, 0, 10)
	ow := startOwner(t, k, src, "", nil)

	t.Run("at subscribe", func(t *testing.T) {
		fl := openLog(t, redex.Options{})
		f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(4), Token: k.token(t, nil)})
		se := lastErrAs[*StaleEpochError](t, f)
		if se.Refuser != SideFollower || se.Follower != 4 || se.Owner != 3 {
			t.Fatalf("stale epoch error %+v, want follower refusing owner 3 < follower 4", se)
		}
		if fl.NextSeq() != 0 {
			t.Fatalf("follower appended from an older-epoch owner (next %d)", fl.NextSeq())
		}
		f.Close()
	})
	t.Run("mid-stream", func(t *testing.T) {
		fl := openLog(t, redex.Options{})
		var ep epochVar
		ep.v.Store(3)
		f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: ep.get, Token: k.token(t, nil)})
		waitCaughtUp(t, f, fl, ol)
		ep.v.Store(4) // the follower learns of a newer topology
		se := lastErrAs[*StaleEpochError](t, f)
		if se.Refuser != SideFollower || se.Owner != 3 {
			t.Fatalf("stale epoch error %+v, want the follower refusing the owner's heartbeat", se)
		}
		before := fl.NextSeq()
		appendN(t, ol, 0, 10, 10)
		waitFor(t, "a refused reconnection", func() bool { return !f.Status().Connected })
		time.Sleep(50 * time.Millisecond) // several reconnection attempts
		if fl.NextSeq() != before {
			t.Fatalf("follower appended from an older-epoch owner (next %d, was %d)", fl.NextSeq(), before)
		}
	})
}

func TestOwnerRefusesBadMissingAndWrongScopeTokens(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	ol := openLog(t, redex.Options{})
	src.add(2, ol)
	appendN(t, ol, 2, 0, 10)
	ow := startOwner(t, k, src, "", nil)

	stranger, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	untrusted, err := stranger.Issue(identity.Grant{Subject: k.follower.PublicKey(), Scope: identity.ScopeReplicate, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	expired, err := k.operator.Issue(identity.Grant{Subject: k.follower.PublicKey(), Scope: identity.ScopeReplicate, TTL: time.Second, NotBefore: time.Now().Add(-time.Hour)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tampered := k.token(t, nil)
	tb, _ := tampered()
	tb = append([]byte(nil), tb...)
	tb[len(tb)-1] ^= 1

	cases := map[string]func() ([]byte, error){
		"missing":       func() ([]byte, error) { return nil, nil },
		"garbage":       func() ([]byte, error) { return []byte("not a token"), nil },
		"wrong scope":   k.token(t, func(g *identity.Grant) { g.Scope = identity.ScopeConsume | identity.ScopeIngest }),
		"other shard":   k.token(t, func(g *identity.Grant) { g.Shard, g.ShardBound = 7, true }),
		"untrusted":     func() ([]byte, error) { return untrusted.Encode(), nil },
		"expired":       func() ([]byte, error) { return expired.Encode(), nil },
		"bad signature": func() ([]byte, error) { return tb, nil },
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			fl := openLog(t, redex.Options{})
			f := startFollower(t, FollowerOptions{Shard: 2, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: tok})
			lastErrAs[*DeniedError](t, f)
			f.Close()
			if fl.NextSeq() != 0 {
				t.Fatalf("denied follower appended up to %d", fl.NextSeq())
			}
		})
	}
	t.Run("bound to this shard is accepted", func(t *testing.T) {
		fl := openLog(t, redex.Options{})
		f := startFollower(t, FollowerOptions{Shard: 2, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, func(g *identity.Grant) { g.Shard, g.ShardBound = 2, true })})
		waitCaughtUp(t, f, fl, ol)
	})
}

func TestWaitReplicatedReturnsOnlyAfterAFollowerHasTheEvent(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	ol := openLog(t, redex.Options{})
	src.add(0, ol)
	ow := startOwner(t, k, src, "", nil)
	fl := openLog(t, redex.Options{})
	gate := make(chan struct{})
	arrived := make(chan struct{}, 16)
	f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil),
		beforeAppend: func(int) { arrived <- struct{}{}; <-gate }})
	waitFor(t, "follower connected", func() bool { return f.Status().Connected })

	seq, err := ol.Append([]byte("must reach a standby"))
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- ow.srv.WaitReplicated(context.Background(), 0, seq) }()
	<-arrived // the follower received the entry and is blocked before appending it
	select {
	case err := <-waited:
		t.Fatalf("WaitReplicated returned (%v) while the follower had not appended seq %d", err, seq)
	case <-time.After(50 * time.Millisecond):
	}
	if fl.NextSeq() != 0 {
		t.Fatal("follower appended before the gate opened")
	}
	close(gate)
	if err := <-waited; err != nil {
		t.Fatalf("WaitReplicated: %v", err)
	}
	if _, err := fl.Get(seq); err != nil {
		t.Fatalf("WaitReplicated returned but the follower lacks seq %d: %v", seq, err)
	}
	pos := ow.srv.FollowerPositions(0)
	if len(pos) != 1 || pos[0].Name != "follower-0" || pos[0].Next != seq+1 || !pos[0].Connected || pos[0].Epoch != 1 {
		t.Fatalf("positions %+v, want follower-0 at %d connected at epoch 1", pos, seq+1)
	}
}

func TestWaitReplicatedEndsWithContextAndOnClose(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	ol := openLog(t, redex.Options{})
	src.add(0, ol)
	ow := startOwner(t, k, src, "", nil)
	seq, _ := ol.Append([]byte("nobody follows"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := ow.srv.WaitReplicated(ctx, 0, seq); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReplicated with no follower: %v, want context.DeadlineExceeded", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- ow.srv.WaitReplicated(context.Background(), 0, seq) }()
	ow.stop()
	if err := <-waited; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("WaitReplicated across Close: %v, want ErrServerClosed", err)
	}
}

func TestFollowerReportsLag(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	ol := openLog(t, redex.Options{})
	src.add(0, ol)
	appendN(t, ol, 0, 0, 10)
	ow := startOwner(t, k, src, "", nil)
	fl := openLog(t, redex.Options{})
	gate := make(chan struct{})
	var once sync.Once
	f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil),
		beforeAppend: func(int) { once.Do(func() { <-gate }) }})
	// The follower is stuck before its first append; the accept told it
	// the owner's next seq.
	waitFor(t, "lag reported", func() bool { st := f.Status(); return st.Lag == 10 && st.OwnerNext == 10 })
	close(gate)
	waitCaughtUp(t, f, fl, ol)
	waitFor(t, "lag back to zero", func() bool { return f.Status().Lag == 0 })
}

func TestManyShardsReplicateWithPerShardOrder(t *testing.T) {
	const shards, perShard = 4, 2500
	k := newKeys(t)
	src := newSource(1)
	owners := make([]*redex.Log, shards)
	for s := range shards {
		owners[s] = openLog(t, redex.Options{})
		src.add(uint16(s), owners[s])
		appendN(t, owners[s], uint16(s), 0, perShard/2)
	}
	ow := startOwner(t, k, src, "", nil)
	fls := make([]*redex.Log, shards)
	fs := make([]*Follower, shards)
	for s := range shards {
		fls[s] = openLog(t, redex.Options{})
		fs[s] = startFollower(t, FollowerOptions{Shard: uint16(s), Addr: ow.addr, Log: fls[s], Epoch: constEpoch(1), Token: k.token(t, nil)})
	}
	var wg sync.WaitGroup
	for s := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			appendN(t, owners[s], uint16(s), perShard/2, perShard/2)
		}()
	}
	wg.Wait()
	for s := range shards {
		waitCaughtUp(t, fs[s], fls[s], owners[s])
		assertReplica(t, fls[s], owners[s], 0)
		es, _ := fls[s].Read(0, perShard)
		for i, e := range es {
			if string(e.Payload) != string(payload(uint16(s), i)) {
				t.Fatalf("shard %d entry %d is %q: order or shard mixed up", s, i, e.Payload)
			}
		}
	}
}

func TestDivergedFollowerStops(t *testing.T) {
	k := newKeys(t)
	src := newSource(2)
	ol := openLog(t, redex.Options{})
	src.add(0, ol)
	appendN(t, ol, 0, 0, 5)
	ow := startOwner(t, k, src, "", nil)
	fl := openLog(t, redex.Options{})
	appendN(t, fl, 0, 0, 8) // a suffix the (new) owner never had
	f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(2), Token: k.token(t, nil)})
	<-f.Done()
	var div *DivergedError
	if err := f.Err(); !errors.As(err, &div) || div.FollowerNext != 8 || div.CutFrom != 5 {
		t.Fatalf("follower error %v, want *DivergedError{FollowerNext: 8, CutFrom: 5}", err)
	}
}

// TestEntryTooLargeForAPacketStopsTheFollower: an entry above
// MaxEntryPayload (a log configured past the RedEX default) is refused,
// never cut; anything up to it is fragmented (fragment_test.go).
func TestEntryTooLargeForAPacketStopsTheFollower(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	ol := openLog(t, redex.Options{MaxPayload: MaxEntryPayload + 1})
	src.add(0, ol)
	appendN(t, ol, 0, 0, 3)
	big := make([]byte, MaxEntryPayload+1)
	if _, err := ol.Append(big); err != nil {
		t.Fatal(err)
	}
	ow := startOwner(t, k, src, "", nil)
	fl := openLog(t, redex.Options{})
	f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil)})
	<-f.Done()
	var ref *RefusedError
	if err := f.Err(); !errors.As(err, &ref) || ref.Code != RefuseTooLarge || ref.Seq != 3 {
		t.Fatalf("follower error %v, want *RefusedError{Code: RefuseTooLarge, Seq: 3}", err)
	}
	if fl.NextSeq() != 3 {
		t.Fatalf("follower next %d, want the 3 entries before the big one", fl.NextSeq())
	}
}

func TestMaxEntryPayloadReplicates(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	ol := openLog(t, redex.Options{})
	src.add(0, ol)
	big := make([]byte, MaxEntryPayload)
	for i := range big {
		big[i] = byte(i)
	}
	for range 3 {
		if _, err := ol.Append(big); err != nil {
			t.Fatal(err)
		}
	}
	ow := startOwner(t, k, src, "", nil)
	fl := openLog(t, redex.Options{})
	f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil)})
	waitCaughtUp(t, f, fl, ol)
	assertReplica(t, fl, ol, 0)
}

func TestUnknownShardIsRetriedNotFatal(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	ow := startOwner(t, k, src, "", nil)
	fl := openLog(t, redex.Options{})
	f := startFollower(t, FollowerOptions{Shard: 9, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil)})
	ref := lastErrAs[*RefusedError](t, f)
	if ref.Code != RefuseUnknown || f.Err() != nil {
		t.Fatalf("refusal %+v, terminal %v; want RefuseUnknown and still retrying", ref, f.Err())
	}
	ol := openLog(t, redex.Options{})
	appendN(t, ol, 9, 0, 5)
	src.add(9, ol) // the node acquires the shard
	waitCaughtUp(t, f, fl, ol)
}

func TestServeConnRejectsAFirstPacketThatIsNotASubscribe(t *testing.T) {
	k := newKeys(t)
	srv, err := NewServer(ServerOptions{Source: newSource(1), Verifier: k.verifier, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	events, err := wire.BuildPacket(nil, wire.Header{Subprotocol: wire.SubprotocolEvents, Sequence: 1}, [][]byte{[]byte("x")}, wire.DefaultMaxPayload)
	if err != nil {
		t.Fatal(err)
	}
	ack := newPacketWriter(nil, 0, 1024)
	ack.add(appendAck(nil, ackMsg{Shard: 0, Next: 1}))
	ack.seq++
	h := wire.Header{Subprotocol: Subprotocol, Sequence: 1, PayloadLen: uint16(len(ack.buf) - wire.HeaderSize), EventCount: 1}
	h.Put((*[wire.HeaderSize]byte)(ack.buf[:wire.HeaderSize]))

	for name, pkt := range map[string][]byte{"events subprotocol": events, "ack first": ack.buf} {
		t.Run(name, func(t *testing.T) {
			a, b := net.Pipe()
			defer b.Close()
			done := make(chan error, 1)
			go func() { done <- srv.ServeConn(a) }()
			go func() { _, _ = b.Write(pkt) }()
			if err := <-done; !errors.Is(err, ErrProtocol) {
				t.Fatalf("ServeConn: %v, want ErrProtocol", err)
			}
		})
	}
}

func TestServerRefusesAckBeyondWhatWasSent(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	ol := openLog(t, redex.Options{})
	src.add(0, ol)
	appendN(t, ol, 0, 0, 3)
	ow := startOwner(t, k, src, "", nil)
	conn, err := net.Dial("tcp", ow.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tok, _ := k.token(t, nil)()
	pw := newPacketWriter(conn, 0, 4096)
	if err := pw.send(appendSubscribe(nil, subscribeMsg{Shard: 0, From: 0, Epoch: 1, Name: "liar", Token: tok})); err != nil {
		t.Fatal(err)
	}
	pr := newPacketReader(conn)
	if _, err := pr.next(); err != nil { // accept
		t.Fatal(err)
	}
	if err := pw.send(appendAck(nil, ackMsg{Shard: 0, Next: 1000})); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, err := pr.next(); err != nil {
			break // the owner dropped the connection
		}
	}
	for _, p := range ow.srv.FollowerPositions(0) {
		if p.Next > 3 {
			t.Fatalf("a lying ack moved the position to %d", p.Next)
		}
	}
}

func TestDivergedFollowerWalksBackAndTruncatesWhenAllowed(t *testing.T) {
	k := newKeys(t)
	src := newSource(2)
	ol := openLog(t, redex.Options{})
	src.add(0, ol)
	appendN(t, ol, 0, 0, 5)
	fl := openLog(t, redex.Options{Dir: t.TempDir()})
	prefix, _ := ol.Read(0, 5) // replicated from the old owner
	if err := fl.AppendReplicatedBatch(prefix); err != nil {
		t.Fatal(err)
	}
	for range 3 { // the old owner's unreplicated suffix, seqs 5..7
		if _, err := fl.Append([]byte("never acknowledged by the new owner")); err != nil {
			t.Fatal(err)
		}
	}
	// The new owner wrote other entries at 5..14: counting seqs alone
	// would not notice the follower's 5..7 are not its own.
	appendN(t, ol, 0, 5, 10)
	ow := startOwner(t, k, src, "", nil)

	t.Run("refused without permission", func(t *testing.T) {
		f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(2), Token: k.token(t, nil)})
		<-f.Done()
		var div *DivergedError
		if err := f.Err(); !errors.As(err, &div) || div.FollowerNext != 8 || div.CutFrom != 7 {
			t.Fatalf("follower error %v, want *DivergedError{FollowerNext: 8, CutFrom: 7}", err)
		}
		if fl.NextSeq() != 8 {
			t.Fatalf("follower log changed without permission (next %d)", fl.NextSeq())
		}
	})
	t.Run("cut back when allowed", func(t *testing.T) {
		f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(2), Token: k.token(t, nil), TruncateDiverged: true})
		waitCaughtUp(t, f, fl, ol)
		appendN(t, ol, 0, 15, 10)
		waitCaughtUp(t, f, fl, ol)
		assertReplica(t, fl, ol, 0)
		var div *DivergedError
		if st := f.Status(); st.Subscriptions != 1 || !errors.As(st.LastErr, &div) || div.FollowerNext != 6 || div.CutFrom != 5 {
			t.Fatalf("status %+v: want one subscription after walking back to the common prefix at 5", st)
		}
	})
}

func TestFollowerCloseStopsRetryingCleanly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	k := newKeys(t)
	fl := openLog(t, redex.Options{})
	f := startFollower(t, FollowerOptions{Shard: 0, Addr: addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil)})
	waitFor(t, "a failed dial", func() bool { return f.Status().LastErr != nil })
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(f.Err(), ErrFollowerClosed) {
		t.Fatalf("Err after Close: %v, want ErrFollowerClosed", f.Err())
	}
	select {
	case <-f.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
}

func TestOwnerEndsAStreamWhenItMovesToANewerEpoch(t *testing.T) {
	k := newKeys(t)
	src := newSource(3)
	ol := openLog(t, redex.Options{})
	src.add(0, ol)
	appendN(t, ol, 0, 0, 10)
	ow := startOwner(t, k, src, "", nil)
	fl := openLog(t, redex.Options{})
	var ep epochVar
	ep.v.Store(3)
	f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: ep.get, Token: k.token(t, nil)})
	waitCaughtUp(t, f, fl, ol)
	src.epoch.Store(4) // the owner gets the new topology first
	se := lastErrAs[*StaleEpochError](t, f)
	if se.Refuser != SideOwner || se.Follower != 3 || se.Owner != 4 {
		t.Fatalf("stale epoch error %+v, want the owner (4) ending the epoch-3 stream", se)
	}
	before := fl.NextSeq()
	appendN(t, ol, 0, 10, 10)
	waitFor(t, "the refused stream to end", func() bool { return !f.Status().Connected })
	time.Sleep(50 * time.Millisecond) // several refused resubscriptions
	if fl.NextSeq() != before {
		t.Fatalf("follower at epoch 3 took entries from the epoch-4 owner (next %d, was %d)", fl.NextSeq(), before)
	}
	ep.v.Store(4) // and then the follower
	waitCaughtUp(t, f, fl, ol)
	assertReplica(t, fl, ol, 0)
}

func TestFollowerWhoseLogWasAppendedLocallyStopsWithSeqGap(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	ol := openLog(t, redex.Options{})
	src.add(0, ol)
	appendN(t, ol, 0, 0, 10)
	ow := startOwner(t, k, src, "", nil)
	fl := openLog(t, redex.Options{})
	f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil)})
	waitCaughtUp(t, f, fl, ol)
	if _, err := fl.Append([]byte("a local write on a follower")); err != nil {
		t.Fatal(err)
	}
	appendN(t, ol, 0, 10, 5)
	<-f.Done()
	var gap *redex.SeqGapError
	if err := f.Err(); !errors.As(err, &gap) || gap.Got != 10 || gap.Want != 11 {
		t.Fatalf("follower error %v, want a *redex.SeqGapError{Got: 10, Want: 11}", err)
	}
	if fl.NextSeq() != 11 {
		t.Fatalf("follower next %d, want 11: nothing replicated past the gap", fl.NextSeq())
	}
}

func TestWaitReplicatedNeedsOnlyOneOfSeveralFollowers(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	ol := openLog(t, redex.Options{})
	src.add(0, ol)
	ow := startOwner(t, k, src, "", nil)
	stuckLog := openLog(t, redex.Options{})
	gate := make(chan struct{})
	defer close(gate)
	stuck := startFollower(t, FollowerOptions{Name: "b-stuck", Shard: 0, Addr: ow.addr, Log: stuckLog, Epoch: constEpoch(1), Token: k.token(t, nil),
		beforeAppend: func(int) { <-gate }})
	freeLog := openLog(t, redex.Options{})
	free := startFollower(t, FollowerOptions{Name: "a-free", Shard: 0, Addr: ow.addr, Log: freeLog, Epoch: constEpoch(1), Token: k.token(t, nil)})
	waitFor(t, "both connected", func() bool { return stuck.Status().Connected && free.Status().Connected })

	seq, err := ol.Append([]byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ow.srv.WaitReplicated(ctx, 0, seq); err != nil {
		t.Fatalf("WaitReplicated with one of two followers free: %v", err)
	}
	if _, err := freeLog.Get(seq); err != nil {
		t.Fatalf("the free follower lacks seq %d: %v", seq, err)
	}
	pos := ow.srv.FollowerPositions(0)
	if len(pos) != 2 || pos[0].Name != "a-free" || pos[0].Next != 1 || pos[1].Name != "b-stuck" || pos[1].Next != 0 {
		t.Fatalf("positions %+v, want a-free at 1 and b-stuck at 0", pos)
	}
	// The stuck follower learns the owner's position from the stream, which
	// may reach it after WaitReplicated returned for the free one.
	waitFor(t, "stuck follower reports lag 1", func() bool { return stuck.Status().Lag == 1 })
}
