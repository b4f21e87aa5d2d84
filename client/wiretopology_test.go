package client

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// noHTTP fails every HTTP request and counts them.
type noHTTP struct{ n atomic.Int64 }

func (f *noHTTP) RoundTrip(*http.Request) (*http.Response, error) {
	f.n.Add(1)
	return nil, errors.New("no HTTP for a binary-only client")
}

// TestBinaryOnlyClientNeedsNoHTTP learns the topology over a wire port,
// follows a move (refreshing over the members' wire ports) and polls, all
// without one HTTP request.
func TestBinaryOnlyClientNeedsNoHTTP(t *testing.T) {
	c := newBinCluster(t)
	c.push(t, 1, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rt := &noHTTP{}
	cl, err := New(ctx, Options{WireAddresses: []string{c.wire["b"]}, Transport: TransportBinary, RetryBase: time.Millisecond,
		HTTPClient: &http.Client{Transport: rt}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if cl.Topology().Epoch != 1 {
		t.Fatalf("learnt epoch %d", cl.Topology().Epoch)
	}
	key := keysFor(0, 1)[0]
	if _, err := cl.Ingest(ctx, Event{Key: key, Payload: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	c.push(t, 2, "b") // shard 0 moves: a answers not_owner, the client refreshes
	if _, err := cl.Ingest(ctx, Event{Key: key, Payload: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	if cl.Topology().Epoch != 2 {
		t.Fatalf("after the move the client routes by epoch %d", cl.Topology().Epoch)
	}
	p, err := cl.NewPoller("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Poll(ctx, 10); err != nil {
		t.Fatal(err)
	}
	if n := rt.n.Load(); n != 0 {
		t.Fatalf("a binary-only client made %d HTTP requests", n)
	}
	if _, err := New(ctx, Options{WireAddresses: []string{c.wire["a"]}}); err == nil {
		t.Fatal("WireAddresses without TransportBinary was accepted")
	}
}
