package runtime

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/purplerain/mesh-operator/engine/wire"
	"github.com/purplerain/mesh-operator/node/replication"
	"github.com/purplerain/mesh-operator/node/wireapi"
)

// peekTimeout bounds how long a new wire-port connection may take to send
// its first header.
const peekTimeout = 10 * time.Second

// wireMux serves the node's wire port: it reads each connection's first
// 64-byte header and hands the connection, with that header still to be
// read, to replication (followers) or to the binary data API (clients).
// Anything else is closed.
type wireMux struct {
	repl *replication.Server
	data *wireapi.Server
	log  *slog.Logger

	mu      sync.Mutex
	closed  bool
	peeking map[net.Conn]struct{}
	wg      sync.WaitGroup
}

// serve accepts until ln is closed (then it returns nil).
func (m *wireMux) serve(ln net.Listener) error {
	for {
		conn, err := ln.Accept()
		if err != nil {
			m.mu.Lock()
			closed := m.closed
			m.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			_ = conn.Close()
			return nil
		}
		m.peeking[conn] = struct{}{}
		m.wg.Add(1)
		m.mu.Unlock()
		go m.dispatch(conn)
	}
}

func (m *wireMux) dispatch(conn net.Conn) {
	var hdr [wire.HeaderSize]byte
	_ = conn.SetReadDeadline(time.Now().Add(peekTimeout))
	_, err := io.ReadFull(conn, hdr[:])
	_ = conn.SetReadDeadline(time.Time{})
	m.mu.Lock()
	delete(m.peeking, conn)
	m.mu.Unlock()
	defer m.wg.Done()
	if err != nil {
		_ = conn.Close()
		return
	}
	pc := &peekedConn{Conn: conn, head: hdr[:]}
	switch {
	case replication.IsReplication(hdr[:]):
		_ = m.repl.ServeConn(pc)
	case wireapi.IsDataAPI(hdr[:]):
		_ = m.data.ServeConn(pc)
	default:
		m.log.Warn("wire port: connection with an unknown header; closing", "remote", conn.RemoteAddr().String())
		_ = conn.Close()
	}
}

// close closes the connections still being peeked at and waits for every
// dispatch (the servers themselves are closed by their owners).
func (m *wireMux) close() {
	m.mu.Lock()
	m.closed = true
	for c := range m.peeking {
		_ = c.Close()
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// peekedConn replays the peeked header before reading on.
type peekedConn struct {
	net.Conn
	head []byte
}

func (c *peekedConn) Read(b []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(b, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
