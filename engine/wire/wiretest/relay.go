// Package wiretest holds test helpers for sealed wire sessions.
package wiretest

import (
	"crypto/ed25519"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/purplerain/mesh-operator/engine/wire"
)

// Relay is a man in the middle for tests: it ends every incoming wire
// session with its own key (so it could read and change everything the
// client sends) and relays the plaintext, both ways, over its own session
// to the real server. A client that pins the server's keys must refuse it
// before sending anything; FromClient says whether it did.
type Relay struct {
	ln          net.Listener
	sign        func([]byte) []byte
	public      ed25519.PublicKey
	to          string
	subprotocol uint16
	fromClient  atomic.Int64

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

// StartRelay serves on ln, signing its session handshakes with sign and
// public, and relays to the server at to, which speaks subprotocol. Close
// stops it.
func StartRelay(ln net.Listener, sign func([]byte) []byte, public ed25519.PublicKey, to string, subprotocol uint16) *Relay {
	r := &Relay{ln: ln, sign: sign, public: public, to: to, subprotocol: subprotocol}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.serve()
	}()
	return r
}

// FromClient is how many plaintext bytes clients sent through the relay
// (their tokens come first).
func (r *Relay) FromClient() int64 { return r.fromClient.Load() }

// Close stops accepting, cuts every relayed connection and waits for the
// relay's goroutines.
func (r *Relay) Close() {
	_ = r.ln.Close()
	r.mu.Lock()
	for _, c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *Relay) track(c net.Conn) {
	r.mu.Lock()
	r.conns = append(r.conns, c)
	r.mu.Unlock()
}

func (r *Relay) serve() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.track(c)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer c.Close()
			r.relay(c)
		}()
	}
}

func (r *Relay) relay(c net.Conn) {
	cc, err := wire.ServerSession{Sign: r.sign, Public: r.public, Timeout: 5 * time.Second}.Accept(c)
	if err != nil {
		return
	}
	nc, err := net.Dial("tcp", r.to)
	if err != nil {
		return
	}
	r.track(nc)
	defer nc.Close()
	sc, err := wire.ClientSession{Subprotocol: r.subprotocol}.Handshake(nc)
	if err != nil {
		return
	}
	go func() {
		_, _ = io.Copy(cc, sc)
		_ = cc.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := cc.Read(buf)
		r.fromClient.Add(int64(n))
		if n > 0 {
			if _, werr := sc.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = sc.Close()
			return
		}
	}
}
