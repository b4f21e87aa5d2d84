package replication

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/redex"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// source is a LogSource over a fixed set of logs.
type source struct {
	mu    sync.Mutex
	logs  map[uint16]*redex.Log
	epoch atomic.Uint64
}

func newSource(epoch uint64) *source {
	s := &source{logs: map[uint16]*redex.Log{}}
	s.epoch.Store(epoch)
	return s
}

func (s *source) Log(shard uint16) (*redex.Log, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.logs[shard]
	if !ok {
		return nil, fmt.Errorf("shard %d not owned here", shard)
	}
	return l, nil
}

func (s *source) Epoch() uint64 { return s.epoch.Load() }

func (s *source) add(shard uint16, l *redex.Log) {
	s.mu.Lock()
	s.logs[shard] = l
	s.mu.Unlock()
}

// keys is the operator's key pair (trusted by the owner) and a follower's.
type keys struct {
	operator, follower *identity.KeyPair
	verifier           *identity.Verifier
}

func newKeys(t testing.TB) *keys {
	t.Helper()
	op, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	fo, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &keys{operator: op, follower: fo, verifier: identity.NewVerifier([]ed25519.PublicKey{op.PublicKey()})}
}

// token issues a replication token; adjust changes the grant first.
func (k *keys) token(t testing.TB, adjust func(g *identity.Grant)) func() ([]byte, error) {
	t.Helper()
	g := identity.Grant{Subject: k.follower.PublicKey(), Scope: identity.ScopeReplicate, TTL: time.Hour}
	if adjust != nil {
		adjust(&g)
	}
	tok, err := k.operator.Issue(g, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	raw := tok.Encode()
	return func() ([]byte, error) { return raw, nil }
}

func openLog(t testing.TB, o redex.Options) *redex.Log {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quiet()
	}
	l, err := redex.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

type owner struct {
	srv  *Server
	addr string
	src  *source
	done chan error
}

// startOwner serves src on a free loopback port (or addr when given).
func startOwner(t testing.TB, k *keys, src *source, addr string, adjust func(o *ServerOptions)) *owner {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for range 50 { // a just-closed port can take a moment to be reusable
		ln, err = net.Listen("tcp", addr)
		if err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	o := ServerOptions{Source: src, Verifier: k.verifier, HeartbeatInterval: 20 * time.Millisecond, Logger: quiet()}
	if adjust != nil {
		adjust(&o)
	}
	srv, err := NewServer(o)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	ow := &owner{srv: srv, addr: ln.Addr().String(), src: src, done: make(chan error, 1)}
	go func() { ow.done <- srv.Serve(ln) }()
	t.Cleanup(ow.stop)
	return ow
}

func (o *owner) stop() {
	if o.srv.isClosed() {
		return
	}
	o.srv.Close()
	<-o.done
}

type epochVar struct{ v atomic.Uint64 }

func (e *epochVar) get() uint64 { return e.v.Load() }

func startFollower(t testing.TB, o FollowerOptions) *Follower {
	t.Helper()
	if o.Name == "" {
		o.Name = "follower-0"
	}
	if o.Logger == nil {
		o.Logger = quiet()
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = 5 * time.Millisecond
		o.MaxBackoff = 50 * time.Millisecond
	}
	if o.AckInterval == 0 {
		o.AckInterval = 10 * time.Millisecond
	}
	f, err := StartFollower(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

func constEpoch(e uint64) func() uint64 { return func() uint64 { return e } }

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitCaughtUp waits until the follower log's NextSeq equals the owner's.
func waitCaughtUp(t testing.TB, f *Follower, fl, ol *redex.Log) {
	t.Helper()
	waitFor(t, "follower to catch up", func() bool {
		if err := f.Err(); err != nil {
			t.Fatalf("follower stopped: %v", err)
		}
		return fl.NextSeq() == ol.NextSeq()
	})
}

// assertReplica checks the follower holds exactly the owner's entries from
// `from` on: same seqs, stamps, flags and payloads, in order.
func assertReplica(t testing.TB, fl, ol *redex.Log, from uint64) {
	t.Helper()
	want, err := ol.Read(from, int(ol.NextSeq()-from)+1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := fl.Read(from, int(fl.NextSeq()-from)+1)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("follower holds %d entries from %d, owner %d", len(got), from, len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Seq != w.Seq || g.Time != w.Time || g.Flags != w.Flags || !bytes.Equal(g.Payload, w.Payload) {
			t.Fatalf("entry %d differs: follower {%d %d %x %q}, owner {%d %d %x %q}", i, g.Seq, g.Time, g.Flags, g.Payload, w.Seq, w.Time, w.Flags, w.Payload)
		}
	}
}

func payload(shard uint16, i int) []byte { return []byte(fmt.Sprintf("s%d-e%06d", shard, i)) }

func appendN(t testing.TB, l *redex.Log, shard uint16, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		var err error
		if i%5 == 4 {
			_, err = l.AppendWithFlags(payload(shard, i), redex.FlagTombstone)
		} else {
			_, err = l.Append(payload(shard, i))
		}
		if err != nil {
			t.Error(err)
			return
		}
	}
}

// errAs waits until the follower's last (or terminal) error is of type T.
func lastErrAs[T error](t testing.TB, f *Follower) T {
	t.Helper()
	var target T
	waitFor(t, fmt.Sprintf("follower error of type %T", target), func() bool {
		err := f.Err()
		if err == nil {
			err = f.Status().LastErr
		}
		return errors.As(err, &target)
	})
	return target
}

var _ = context.Background
