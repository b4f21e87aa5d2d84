package runtime

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/replication"
	"github.com/purplerain/mesh-operator/node/topology"
	"github.com/purplerain/mesh-operator/node/wireapi"
)

// rig is an owner node serving its HTTP data API and its wire port (the
// multiplexer in front of replication and the binary data API) on
// 127.0.6.<host>, and, with ackPolicy Standby, a second node following its
// one shard over that wire port.
type rig struct {
	owner, follower *node.Node
	data, wire      string
	stop            func()
}

func newRig(tb testing.TB, host int, ackPolicy string) *rig {
	tb.Helper()
	ck, err := identity.Generate(nil)
	if err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	cfg := &nodeconfig.Config{
		Cluster: "bench", Shards: 1, AckPolicy: ackPolicy,
		Storage:   nodeconfig.Storage{Mode: "Memory", Fsync: "Never"},
		Retention: nodeconfig.Retention{MaxBytes: 256 << 20},
	}
	var stops []func()
	stop := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	fail := func(err error) {
		stop()
		tb.Fatal(err)
	}
	owner, err := node.New(node.Options{Name: "a", Config: cfg, ClusterKey: ck, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	stops = append(stops, func() { _ = owner.Close() })
	repl, err := replication.NewServer(replication.ServerOptions{
		Source: owner.OwnerSource(), Verifier: identity.NewVerifier([]ed25519.PublicKey{ck.PublicKey()}), Logger: log,
		SessionKey: owner.ClusterKey,
	})
	if err != nil {
		fail(err)
	}
	stops = append(stops, func() { _ = repl.Close() })
	owner.SetReplicas(repl)
	// Sessions are signed as the runtime signs them; plain connections
	// stay allowed so tests and benchmarks can compare.
	wd, err := wireapi.NewServer(wireapi.ServerOptions{Backend: owner, Logger: log, SessionKey: owner.ClusterKey})
	if err != nil {
		fail(err)
	}
	ip := fmt.Sprintf("127.0.6.%d", host)
	wln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		fail(err)
	}
	mux := &wireMux{repl: repl, data: wd, log: log, peeking: map[net.Conn]struct{}{}}
	muxDone := make(chan error, 1)
	go func() { muxDone <- mux.serve(wln) }()
	stops = append(stops, func() {
		_ = wln.Close()
		<-muxDone
		_ = wd.Close()
		_ = repl.Close()
		mux.close()
	})
	dln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		fail(err)
	}
	hs := &http.Server{Handler: dataapi.New(owner, log), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(dln) }()
	stops = append(stops, func() { _ = hs.Close() })
	r := &rig{owner: owner, data: dln.Addr().String(), wire: wln.Addr().String()}

	topo := &topology.Topology{
		Cluster: "bench", Epoch: 1, LeaseMillis: 600_000, BaseShards: 1,
		Members: []topology.Member{{Name: "a", Role: topology.Active, Data: r.data, Wire: r.wire}},
		Shards:  []topology.Shard{{ID: 0, Owner: "a"}},
	}
	if ackPolicy == "Standby" {
		follower, err := node.New(node.Options{Name: "s", Config: cfg, ClusterKey: ck, Logger: log})
		if err != nil {
			fail(err)
		}
		stops = append(stops, func() { _ = follower.Close() })
		r.follower = follower
		topo.Members = append(topo.Members, topology.Member{Name: "s", Role: topology.Standby, Data: ip + ":1", Wire: ip + ":2"})
		topo.Shards[0].Followers = []string{"s"}
		if err := follower.ApplyTopology(topo); err != nil {
			fail(err)
		}
	}
	if err := owner.ApplyTopology(topo); err != nil {
		fail(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	retention := make(chan struct{})
	go func() {
		defer close(retention)
		go owner.RunRetention(ctx, 100*time.Millisecond)
		if r.follower != nil {
			r.follower.RunRetention(ctx, 100*time.Millisecond)
		}
		<-ctx.Done()
	}()
	stops = append(stops, func() { cancel(); <-retention })
	r.stop = stop
	return r
}

func TestWirePortCarriesReplicationAndTheBinaryDataAPI(t *testing.T) {
	r := newRig(t, 1, "Standby")
	defer r.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := wireapi.Dial(ctx, r.wire)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Under ackPolicy Standby an ack means the follower, which replicates
	// over the same wire port, holds the event.
	for i := range 20 {
		acks, err := c.Ingest(ctx, []dataapi.Event{{Payload: []byte(fmt.Sprintf("e%d", i))}})
		if err != nil {
			t.Fatal(err)
		}
		if acks[0].Shard != 0 {
			t.Fatalf("acked on shard %d", acks[0].Shard)
		}
		l, err := r.follower.Log(0)
		if err != nil {
			t.Fatal(err)
		}
		if next := l.NextSeq(); next < uint64(i+1) {
			t.Fatalf("event %d acknowledged but the follower's log ends at %d", i, next)
		}
	}
	page, err := c.Poll(ctx, dataapi.PollRequest{Limit: 100})
	if err != nil || len(page.Events) != 20 {
		t.Fatalf("polled %d events (%v), want 20", len(page.Events), err)
	}
}

func TestWirePortClosesUnknownHeaders(t *testing.T) {
	r := newRig(t, 2, "Leader")
	defer r.stop()
	nc, err := net.Dial("tcp", r.wire)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); err == nil || errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("a connection with a garbage header stayed open: %v", err)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a connection with a garbage header was not closed")
	}
	// The data API on the same port still answers, with typed refusals.
	c, err := wireapi.Dial(context.Background(), r.wire)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Poll(context.Background(), dataapi.PollRequest{Limit: 0})
	var re *wireapi.RefusedError
	if !errors.As(err, &re) || re.Code != dataapi.CodeBadRequest {
		t.Fatalf("poll with limit 0: %v", err)
	}
}
