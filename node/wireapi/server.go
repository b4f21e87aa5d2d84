package wireapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/wire"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/refusal"
)

// ErrServerClosed is returned by Serve and ServeConn after Close.
var ErrServerClosed = errors.New("wireapi: server closed")

// ServerOptions configures a Server.
type ServerOptions struct {
	// Backend serves the requests; the node implements it.
	Backend dataapi.Backend
	// MaxInFlight bounds the requests of one connection being served at
	// once; the server stops reading the connection while it is reached.
	// Default 64.
	MaxInFlight int
	// ConnBuffer bounds the request payload bytes one connection holds
	// (partial and in-flight requests); the server stops reading while it
	// is reached. At least MaxRequestBytes+MaxPacketPayload; default
	// 32 MiB.
	ConnBuffer int
	// WriteTimeout bounds writing one answer; a client that does not read
	// loses its connection. Default 10 s.
	WriteTimeout time.Duration
	// Verifier, if set, makes authentication mandatory (opt-in; the
	// default, like the HTTP data API, is none): a connection must first
	// send an auth request with a permission token; ingest then needs
	// identity.ScopeIngest and poll identity.ScopeConsume, until the
	// token's NotAfter. Without it an auth request is answered OK and
	// ignored.
	Verifier *identity.Verifier
	// Now is the clock tokens are checked against. Default time.Now.
	Now func() time.Time
	// SessionKey returns the key that signs session handshakes (wire
	// sessions: a connection that starts with a hello is sealed from then
	// on; the node's current cluster key); nil (or a nil key) accepts
	// sessions unsigned. RequireSealed refuses connections that do not
	// start with a session handshake.
	SessionKey    func() *identity.KeyPair
	RequireSealed bool
	Logger        *slog.Logger
}

// Server serves the binary data API on connections the node's wire port
// hands it. It is safe for concurrent use.
type Server struct {
	o      ServerOptions
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// NewServer returns a server over o.Backend.
func NewServer(o ServerOptions) (*Server, error) {
	if o.Backend == nil {
		return nil, errors.New("wireapi: a backend is required")
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 64
	}
	if o.ConnBuffer == 0 {
		o.ConnBuffer = 32 << 20
	}
	if o.ConnBuffer < MaxRequestBytes+MaxPacketPayload {
		return nil, fmt.Errorf("wireapi: ConnBuffer %d is below MaxRequestBytes+MaxPacketPayload", o.ConnBuffer)
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{o: o, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}, nil
}

// Serve accepts connections on ln and serves each with ServeConn until
// Close (then ErrServerClosed) or an accept error. It closes ln.
func (s *Server) Serve(ln net.Listener) error {
	go func() { <-s.ctx.Done(); _ = ln.Close() }()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return ErrServerClosed
			}
			return fmt.Errorf("wireapi: accept: %w", err)
		}
		go func() { _ = s.ServeConn(conn) }()
	}
}

// Close closes every connection and waits for their requests to end.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

// ServeConn serves one client connection until the client goes away,
// breaks the protocol or the server closes. The connection's first packet
// must still be readable from conn (a wire port that peeked at its header
// hands over a net.Conn that replays it). It closes conn; the error is nil
// when the client closed the connection between requests.
func (s *Server) ServeConn(conn net.Conn) error {
	sealed, err := serverSession(s.o.SessionKey).AcceptOrPlain(conn, s.o.RequireSealed)
	if err != nil {
		_ = conn.Close()
		s.o.Logger.Warn("data API connection refused at the session handshake", "remote", conn.RemoteAddr().String(), "err", err)
		return fmt.Errorf("wireapi: session: %w", err)
	}
	conn = sealed
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = conn.Close()
		return ErrServerClosed
	}
	s.conns[conn] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	ctx, cancel := context.WithCancel(s.ctx)
	c := &serverConn{s: s, nc: conn, bw: bufio.NewWriterSize(conn, 64<<10), budget: newBudget(s.o.ConnBuffer), inflight: map[uint64]bool{}}
	var handlers sync.WaitGroup
	defer func() {
		cancel()
		_ = conn.Close()
		handlers.Wait()
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
	}()
	sem := make(chan struct{}, s.o.MaxInFlight)
	pr := newPacketReader(conn)
	var asm assembler
	var frames [][]byte
	reasm := wire.NewReassembler(maxEventFrame, MaxReassembly)
	for {
		h, err := pr.header()
		if err != nil {
			if errors.Is(err, io.EOF) && asm.cur == nil {
				return nil
			}
			return c.fail(err)
		}
		if err := c.budget.acquire(ctx, int(h.PayloadLen)); err != nil {
			return c.fail(err)
		}
		frames, err = pr.payload(h, frames)
		if err != nil {
			return c.fail(err)
		}
		if frames, err = defragment(reasm, &h, frames, asm.cur != nil); err != nil {
			return c.fail(err)
		}
		req, err := asm.add(h, frames)
		if err != nil {
			return c.fail(err)
		}
		if req == nil {
			continue
		}
		if reasm.Pending() != 0 {
			return c.fail(fmt.Errorf("%w: request %d ended inside a fragmented event", ErrProtocol, req.id))
		}
		if !c.begin(req.id) {
			return c.fail(fmt.Errorf("%w: stream %d is already in flight", ErrProtocol, req.id))
		}
		if req.kind == kindAuth {
			// Answered in line, so every later request sees its outcome.
			c.authenticate(req)
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return c.fail(ctx.Err())
		}
		handlers.Add(1)
		go func() {
			defer handlers.Done()
			defer func() { <-sem }()
			c.serve(ctx, req)
		}()
	}
}

// serverConn is the state one connection's handlers share.
type serverConn struct {
	s      *Server
	nc     net.Conn
	budget *budget

	wmu sync.Mutex
	bw  *bufio.Writer
	seq uint64

	imu      sync.Mutex
	inflight map[uint64]bool

	amu      sync.Mutex
	granted  identity.Scope
	notAfter time.Time
	// tok is the token granted and gen the verifier's trust generation
	// it was verified under: when a credential rotation changes the
	// trusted keys, authorize verifies tok again, so a connection opened
	// with a dropped key loses its grant at once.
	tok *identity.Token
	gen uint64
}

// authenticate checks an auth request's token and answers it.
func (c *serverConn) authenticate(req *request) {
	defer c.budget.release(req.bytes)
	p := newPackets(req.id, nil)
	v := c.s.o.Verifier
	if v == nil {
		_ = appendAuthOK(p)
		c.end(req.id)
		c.write(p)
		return
	}
	var granted identity.Scope
	var notAfter time.Time
	gen := v.Generation() // before verifying: a change during it re-verifies
	reason := "token grants neither ingest nor consume"
	tok, err := identity.ParseToken(req.token)
	if err != nil {
		reason = err.Error()
	} else {
		now := c.s.o.Now()
		for _, sc := range []identity.Scope{identity.ScopeIngest, identity.ScopeConsume} {
			if err := v.Verify(tok, now, sc); err == nil {
				granted |= sc
			} else {
				reason = err.Error()
			}
		}
		notAfter = tok.NotAfter()
	}
	if granted == 0 {
		_ = appendRefused(p, dataapi.ErrorResponse{Code: dataapi.CodeRejected, Error: "authentication failed: " + reason})
	} else {
		_ = appendAuthOK(p)
	}
	c.amu.Lock()
	c.granted, c.notAfter, c.tok, c.gen = granted, notAfter, tok, gen
	c.amu.Unlock()
	c.end(req.id)
	c.write(p)
}

// authorize says why the connection may not do what needs scope, or "".
func (c *serverConn) authorize(scope identity.Scope) string {
	if c.s.o.Verifier == nil {
		return ""
	}
	c.amu.Lock()
	defer c.amu.Unlock()
	if v := c.s.o.Verifier; c.tok != nil && c.granted != 0 && v.Generation() != c.gen {
		c.gen = v.Generation()
		var granted identity.Scope
		for _, sc := range []identity.Scope{identity.ScopeIngest, identity.ScopeConsume} {
			if v.Verify(c.tok, c.s.o.Now(), sc) == nil {
				granted |= sc
			}
		}
		if granted == 0 {
			c.granted = 0
			return "the token's key is no longer trusted (credentials rotated): authenticate again"
		}
		c.granted = granted
	}
	switch {
	case c.granted == 0:
		return "authenticate first: send a permission token"
	case scope != 0 && !c.granted.Has(scope): // 0: either data scope will do
		return fmt.Sprintf("token does not grant %v", scope)
	case !c.notAfter.IsZero() && !c.s.o.Now().Before(c.notAfter):
		return "token expired"
	}
	return ""
}

func (c *serverConn) begin(id uint64) bool {
	c.imu.Lock()
	defer c.imu.Unlock()
	if c.inflight[id] {
		return false
	}
	c.inflight[id] = true
	return true
}

func (c *serverConn) end(id uint64) {
	c.imu.Lock()
	delete(c.inflight, id)
	c.imu.Unlock()
}

func (c *serverConn) fail(err error) error {
	if errors.Is(err, ErrProtocol) {
		c.s.o.Logger.Warn("data API client broke the protocol; closing its connection", "remote", c.nc.RemoteAddr().String(), "err", err)
	}
	return err
}

// serve answers one request. The answer's packets go out whole and in
// order; answers to different requests may overtake each other.
func (c *serverConn) serve(ctx context.Context, req *request) {
	defer c.budget.release(req.bytes)
	p := newPackets(req.id, nil)
	var err error
	switch req.kind {
	case kindIngest:
		if why := c.authorize(identity.ScopeIngest); why != "" {
			err = appendRefused(p, dataapi.ErrorResponse{Code: dataapi.CodeRejected, Error: why})
			break
		}
		if len(req.events) == 0 {
			err = appendRefused(p, dataapi.ErrorResponse{Code: dataapi.CodeBadRequest, Error: fmt.Sprintf("a batch holds 1 to %d events, got 0", MaxBatch)})
			break
		}
		acks, ierr := c.s.o.Backend.Ingest(ctx, req.events)
		if ierr != nil {
			err = c.refuse(p, ierr)
			break
		}
		err = appendIngestOK(p, acks)
	case kindPoll:
		if why := c.authorize(identity.ScopeConsume); why != "" {
			err = appendRefused(p, dataapi.ErrorResponse{Code: dataapi.CodeRejected, Error: why})
			break
		}
		if req.poll.Limit < 1 || req.poll.Limit > dataapi.MaxPollLimit {
			err = appendRefused(p, dataapi.ErrorResponse{Code: dataapi.CodeBadRequest, Error: fmt.Sprintf("limit must be 1 to %d", dataapi.MaxPollLimit)})
			break
		}
		resp, perr := c.s.o.Backend.Poll(ctx, req.poll)
		if perr != nil {
			err = c.refuse(p, perr)
			break
		}
		err = appendPollOK(p, resp)
	case kindTopology:
		if why := c.authorize(0); why != "" {
			err = appendRefused(p, dataapi.ErrorResponse{Code: dataapi.CodeRejected, Error: why})
			break
		}
		t := c.s.o.Backend.Topology()
		if t == nil {
			err = c.refuse(p, refusal.ErrNoTopology)
			break
		}
		err = appendTopologyOK(p, t)
	}
	if err != nil {
		// An answer that cannot be framed (an event too large for a
		// packet) is refused as internal rather than cut.
		c.s.o.Logger.Error("data API answer does not fit the wire", "err", err)
		p = newPackets(req.id, p.buf)
		_ = appendRefused(p, dataapi.ErrorResponse{Code: dataapi.CodeInternal, Error: err.Error()})
	}
	c.end(req.id)
	c.write(p)
}

func (c *serverConn) refuse(p *packets, err error) error {
	body, internal := refusalOf(err)
	if internal {
		c.s.o.Logger.Error("data API request failed", "err", err)
	}
	return appendRefused(p, body)
}

func (c *serverConn) write(p *packets) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.o.WriteTimeout))
	_, err := c.bw.Write(p.stamp(&c.seq))
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		_ = c.nc.Close() // the reader stops; the client sees the connection end
	}
}

// budget counts the request bytes a connection may still hold.
type budget struct {
	mu      sync.Mutex
	avail   int
	changed chan struct{}
}

func newBudget(n int) *budget { return &budget{avail: n, changed: make(chan struct{})} }

func (b *budget) acquire(ctx context.Context, n int) error {
	for {
		b.mu.Lock()
		if b.avail >= n {
			b.avail -= n
			b.mu.Unlock()
			return nil
		}
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (b *budget) release(n int) {
	b.mu.Lock()
	b.avail += n
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}
