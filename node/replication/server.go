package replication

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/redex"
	"github.com/purplerain/mesh-operator/engine/wire"
)

// LogSource is what the node gives the owner side: the log of each shard it
// owns and its current topology epoch.
type LogSource interface {
	// Log returns the owner's log for shard, or an error when this node
	// does not hold it.
	Log(shard uint16) (*redex.Log, error)
	// Epoch is the node's current topology epoch.
	Epoch() uint64
}

// ServerOptions configures a Server.
type ServerOptions struct {
	// Source provides the shard logs and the epoch. Required.
	Source LogSource
	// Verifier checks the followers' tokens (ScopeReplicate, bound to the
	// shard or unbound). Required.
	Verifier *identity.Verifier
	// Now is the clock tokens are checked against. Default time.Now.
	Now func() time.Time
	// HeartbeatInterval is how often the owner tells a follower its epoch
	// and next seq, streaming or idle. Default 250ms.
	HeartbeatInterval time.Duration
	// HandshakeTimeout bounds the wait for the subscribe packet. Default 10s.
	HandshakeTimeout time.Duration
	// WriteTimeout bounds each write to a follower. Default 10s.
	WriteTimeout time.Duration
	// MaxPacketPayload bounds the payload of a packet the owner sends.
	// Default (and maximum) wire.MaxPlainPayload.
	MaxPacketPayload int
	// ReadBatch is how many entries a backfill read takes at once.
	// Default 512.
	ReadBatch int
	// Logger receives connection-level messages. Default slog.Default().
	Logger *slog.Logger
	// SessionKey returns the key that signs wire session handshakes
	// (session.go; the node's current cluster key); nil (or a nil key)
	// accepts sessions unsigned. RequireSealed refuses connections that
	// do not start with a handshake.
	SessionKey    func() *identity.KeyPair
	RequireSealed bool
}

// FollowerPosition is what the owner knows of one follower of a shard.
type FollowerPosition struct {
	// Name is the name the follower subscribed with.
	Name string
	// Next is the follower's acknowledged position: every seq below it is
	// appended at the follower.
	Next uint64
	// Epoch is the epoch the follower subscribed at.
	Epoch uint64
	// Connected says whether it is streaming now.
	Connected bool
}

// Server is the owner side of replication: it streams shard logs to
// followers and tracks what they acknowledged.
type Server struct {
	o   ServerOptions
	log *slog.Logger

	mu        sync.Mutex
	closed    bool
	conns     map[net.Conn]struct{}
	listeners map[net.Listener]struct{}
	wg        sync.WaitGroup
	done      chan struct{}

	ackMu sync.Mutex
	acks  map[uint16]*shardAcks

	resyncs atomic.Uint64
	// divergedResyncs counts the resyncs among them that repaired a
	// diverged follower (divergence.go).
	divergedResyncs atomic.Uint64
}

// Resyncs counts the lagged followers this server resynced from a log
// head (resync.go).
func (s *Server) Resyncs() uint64 { return s.resyncs.Load() }

// daemonSnapshots returns the source's daemon snapshots of shard when it
// keeps any, leaving out (and logging) those too large to send.
func (s *Server) daemonSnapshots(shard uint16) [][]byte {
	ds, ok := s.o.Source.(DaemonSnapshotter)
	if !ok {
		return nil
	}
	snaps, err := ds.DaemonSnapshots(shard)
	if err != nil {
		// The log still resyncs; the follower's copies of the daemons
		// whose snapshot is missing stay behind (status reports them).
		s.log.Warn("replication: resync without daemon snapshots", "shard", shard, "err", err)
	}
	out := snaps[:0]
	total := 0
	for _, b := range snaps {
		if len(b) == 0 || len(b) > MaxDaemonSnapshot || total+len(b) > maxResyncBytes {
			s.log.Warn("replication: daemon snapshot left out of a resync", "shard", shard, "bytes", len(b), "max", MaxDaemonSnapshot)
			continue
		}
		total += len(b)
		out = append(out, b)
	}
	if len(out) > maxResyncDaemons {
		s.log.Warn("replication: daemon snapshots left out of a resync", "shard", shard, "count", len(out), "max", maxResyncDaemons)
		out = out[:maxResyncDaemons]
	}
	return out
}

// shardAcks is the acknowledged position of every follower of one shard.
type shardAcks struct {
	followers map[string]*FollowerPosition
	streams   map[string]int // open streams per follower name (a reconnect can overlap the old stream's end)
	best      uint64         // highest Next over followers
	changed   chan struct{}  // closed and replaced whenever best rises
}

// NewServer returns a server; it serves nothing until Serve or ServeConn.
func NewServer(o ServerOptions) (*Server, error) {
	if o.Source == nil {
		return nil, errors.New("replication: ServerOptions.Source is required")
	}
	if o.Verifier == nil {
		return nil, errors.New("replication: ServerOptions.Verifier is required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = 250 * time.Millisecond
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.MaxPacketPayload <= 0 || o.MaxPacketPayload > wire.MaxPlainPayload {
		o.MaxPacketPayload = wire.MaxPlainPayload
	}
	o.MaxPacketPayload = max(o.MaxPacketPayload, 256)
	if o.ReadBatch <= 0 {
		o.ReadBatch = 512
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Server{
		o:         o,
		log:       o.Logger.With("component", "replication-server"),
		conns:     map[net.Conn]struct{}{},
		listeners: map[net.Listener]struct{}{},
		done:      make(chan struct{}),
		acks:      map[uint16]*shardAcks{},
	}, nil
}

// Serve accepts connections on ln and serves each with ServeConn until
// Close (then it returns ErrServerClosed) or an accept error.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			return fmt.Errorf("replication: accept: %w", err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return ErrServerClosed
		}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			if err := s.ServeConn(c); err != nil && !errors.Is(err, ErrServerClosed) {
				s.log.Debug("replication stream ended", "remote", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// Close stops every listener and stream, ends WaitReplicated calls with
// ErrServerClosed and waits for the server's goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// ServeConn serves one follower connection until the follower goes away,
// the stream ends or the server closes. The node's wire port calls it for a
// connection whose first packet carries Subprotocol; the packet must still
// be readable from conn (a port that peeks at the header hands over a
// net.Conn whose Read replays the peeked bytes). It closes conn. A refused subscription returns the
// refusal as the same typed error the follower gets.
func (s *Server) ServeConn(conn net.Conn) error {
	if err := s.session(&conn); err != nil {
		return err
	}
	defer conn.Close()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.conns[conn] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		s.wg.Done()
	}()

	pr := newPacketReader(conn)
	_ = conn.SetReadDeadline(s.o.Now().Add(s.o.HandshakeTimeout))
	msgs, err := pr.next()
	if err != nil {
		return fmt.Errorf("replication: read subscribe: %w", err)
	}
	if len(msgs) != 1 {
		return fmt.Errorf("%w: first packet holds %d messages, want one subscribe", ErrProtocol, len(msgs))
	}
	var sub subscribeMsg
	// A follower that was refused as lagged asks for a resync (resync.go).
	resync := len(msgs[0]) > 0 && msgKind(msgs[0][0]) == kindResyncSubscribe
	if resync {
		if sub, err = decodeResyncSubscribe(msgs[0]); err != nil {
			return fmt.Errorf("replication: decode resync subscribe: %w", err)
		}
	} else {
		m, err := decodeMessage(msgs[0])
		if err != nil {
			return fmt.Errorf("replication: decode subscribe: %w", err)
		}
		if m.kind != kindSubscribe {
			return fmt.Errorf("%w: first message kind %d, want subscribe", ErrProtocol, m.kind)
		}
		sub = m.subscribe
	}
	_ = conn.SetReadDeadline(time.Time{})
	sub.Name = string([]byte(sub.Name)) // detach from the read buffer
	pw := newPacketWriter(conn, sub.Shard, s.o.MaxPacketPayload)

	epoch := s.o.Source.Epoch()
	refuse := func(code RefuseCode, seq uint64, reason string) error {
		_ = conn.SetWriteDeadline(time.Now().Add(s.o.WriteTimeout))
		msg := refuseMsg{Shard: sub.Shard, Code: code, Epoch: epoch, Seq: seq, Reason: reason}
		if err := pw.send(appendRefuse(nil, msg)); err != nil {
			return fmt.Errorf("replication: send refusal: %w", err)
		}
		return refusalError(msg, sub.Epoch, sub.From)
	}
	gen, acceptedAt := s.o.Verifier.Generation(), s.o.Now()
	if reason := s.checkToken(sub); reason != "" {
		return refuse(RefuseDenied, 0, reason)
	}
	if sub.Epoch < epoch {
		return refuse(RefuseStaleEpoch, 0, "subscription epoch is older than the owner's")
	}
	lg, err := s.o.Source.Log(sub.Shard)
	if err != nil {
		return refuse(RefuseUnknown, 0, err.Error())
	}
	first, next := lg.FirstSeq(), lg.NextSeq()
	var snaps [][]byte
	// diverged: the follower holds seqs the owner never had, or its last
	// entry is not the owner's. A resync-subscribe gets a resync for it
	// (divergence.go); a plain subscribe the refusal it always got.
	diverged := ""
	switch {
	case sub.From < first && resync:
		// Snapshots first, then the head: each snapshot then covers at
		// least the entries below the head the follower will start at.
		snaps = s.daemonSnapshots(sub.Shard)
		first, next = lg.FirstSeq(), lg.NextSeq()
	case sub.From < first:
		return refuse(RefuseLagged, first, "owner pruned the follower's next seq")
	case sub.From > next:
		if !resync {
			return refuse(RefuseDiverged, next, "follower holds seqs the owner never had")
		}
		diverged = "follower holds seqs the owner never had"
	case sub.HasPrev && sub.From > first:
		if e, err := lg.Get(sub.From - 1); err == nil && idOf(e) != sub.Prev {
			if !resync {
				return refuse(RefuseDiverged, sub.From-1, "follower's last entry differs from the owner's")
			}
			diverged = "follower's last entry differs from the owner's"
		}
	}
	if diverged != "" {
		snaps = s.daemonSnapshots(sub.Shard)
		first, next = lg.FirstSeq(), lg.NextSeq()
		s.divergedResyncs.Add(1)
		s.log.Warn("replication: resyncing a diverged follower from the log head: "+diverged, "shard", sub.Shard,
			"follower", sub.Name, "from", sub.From, "first", first, "next", next, "daemons", len(snaps))
	}
	resyncing := sub.From < first || diverged != ""
	if resyncing {
		if diverged == "" {
			s.log.Info("replication: resyncing a lagged follower from the log head", "shard", sub.Shard,
				"follower", sub.Name, "from", sub.From, "first", first, "daemons", len(snaps))
		}
		sub.From = first
	}
	// Register the follower before it learns it is accepted, so whoever
	// sees the follower connected also sees the owner know its position.
	s.setConnected(sub, true)
	defer s.setConnected(sub, false)
	_ = conn.SetWriteDeadline(time.Now().Add(s.o.WriteTimeout))
	if resyncing {
		if err := pw.send(appendResync(nil, resyncMsg{Shard: sub.Shard, Epoch: epoch, First: first, OwnerNext: next, Daemons: uint16(len(snaps))})); err != nil {
			return fmt.Errorf("replication: send resync: %w", err)
		}
		if err := sendSnapshots(pw, snaps, func() { _ = conn.SetWriteDeadline(time.Now().Add(s.o.WriteTimeout)) }); err != nil {
			return fmt.Errorf("replication: send daemon snapshots: %w", err)
		}
		s.resyncs.Add(1)
	} else if err := pw.send(appendAccept(nil, acceptMsg{Shard: sub.Shard, Epoch: epoch, From: sub.From, OwnerNext: next, OwnerFirst: first})); err != nil {
		return fmt.Errorf("replication: send accept: %w", err)
	}

	st := &stream{s: s, conn: conn, pw: pw, lg: lg, sub: sub, token: bytes.Clone(sub.Token), gen: gen, acceptedAt: acceptedAt}
	st.sent.Store(sub.From)

	ctx, cancel := context.WithCancel(context.Background())
	acksDone := make(chan error, 1)
	go func() {
		err := st.readAcks(pr)
		cancel()
		conn.Close() // unblocks a sender stuck writing to a gone or hostile follower
		acksDone <- err
	}()
	err = st.run(ctx)
	cancel()
	conn.Close()
	ackErr := <-acksDone
	if s.isClosed() {
		return ErrServerClosed
	}
	if err == nil || errors.Is(err, context.Canceled) {
		if ackErr != nil && !errors.Is(ackErr, io.EOF) && !errors.Is(ackErr, net.ErrClosed) {
			return ackErr
		}
		return nil
	}
	return err
}

// checkToken returns why the subscription's token is refused, or "".
func (s *Server) checkToken(sub subscribeMsg) string {
	return s.verifyToken(sub.Token, sub.Shard, s.o.Now())
}

// verifyToken returns why token is refused for shard at time at, or "".
func (s *Server) verifyToken(token []byte, shard uint16, at time.Time) string {
	if len(token) == 0 {
		return "no token"
	}
	tok, err := identity.ParseToken(token)
	if err != nil {
		return err.Error()
	}
	if err := s.o.Verifier.Verify(tok, at, identity.ScopeReplicate, identity.ForShard(shard)); err != nil {
		return err.Error()
	}
	return ""
}

// stream is one follower's subscription on the owner.
type stream struct {
	s    *Server
	conn net.Conn
	pw   *packetWriter
	lg   *redex.Log
	sub  subscribeMsg
	// sent is one past the highest seq handed to the socket: a follower
	// can never acknowledge more.
	sent atomic.Uint64
	// token was accepted at acceptedAt under the verifier's trust
	// generation gen; when a credential rotation changes the trusted
	// keys, the next heartbeat checks it again (at acceptedAt: a token
	// that merely expired since keeps its stream) and ends the stream if
	// its key is no longer trusted.
	token      []byte
	gen        uint64
	acceptedAt time.Time
}

// readAcks consumes the follower's acknowledgements until the connection
// ends. Anything but an ack for this shard, or an ack beyond what was
// sent, is a protocol violation.
func (st *stream) readAcks(pr *packetReader) error {
	for {
		msgs, err := pr.next()
		if err != nil {
			return err
		}
		for _, b := range msgs {
			m, err := decodeMessage(b)
			if err != nil {
				return err
			}
			if m.kind != kindAck || m.ack.Shard != st.sub.Shard {
				return fmt.Errorf("%w: follower sent message kind %d for shard %d", ErrProtocol, m.kind, m.ack.Shard)
			}
			if sent := st.sent.Load(); m.ack.Next > sent {
				return fmt.Errorf("%w: follower acknowledged seq %d, only %d sent", ErrProtocol, m.ack.Next, sent)
			}
			st.s.recordAck(st.sub, m.ack.Next)
		}
	}
}

// run streams the log from the subscription's From: backfill by reads,
// then live by a tail. A tail that lags (a slow follower) falls back to
// reads from where it stopped; only entries the owner pruned end the stream
// (with a lagged refusal).
func (st *stream) run(ctx context.Context) error {
	o := &st.s.o
	hb := time.NewTicker(o.HeartbeatInterval)
	defer hb.Stop()
	pos := st.sub.From
	buf := make([]redex.Entry, 0, o.ReadBatch)
	for {
		// Catch up by reads until a read comes back short.
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			var err error
			buf, err = st.lg.ReadInto(buf[:0], pos, o.ReadBatch)
			if errors.Is(err, redex.ErrPruned) {
				return st.refuse(RefuseLagged, st.lg.FirstSeq(), "owner pruned entries the follower still needed")
			}
			if err != nil {
				return err
			}
			if len(buf) == 0 {
				break
			}
			st.sent.Store(pos + uint64(len(buf)))
			st.deadline()
			for _, e := range buf {
				if err := st.addEntry(e); err != nil {
					return err
				}
			}
			pos += uint64(len(buf))
			select {
			case <-hb.C:
				if err := st.addHeartbeat(); err != nil {
					return err
				}
			default:
			}
			if len(buf) < o.ReadBatch {
				break
			}
		}
		if err := st.flush(); err != nil {
			return err
		}
		t, err := st.lg.Tail(pos)
		if err != nil {
			return st.refuse(RefuseUnavailable, pos, "owner log closed")
		}
		pos, err = st.live(ctx, t, hb, pos)
		t.Close()
		if err != nil {
			return err
		}
	}
}

// live forwards a tail's entries until it ends. It returns the next seq to
// stream and nil when the tail lagged (the caller catches up by reads).
func (st *stream) live(ctx context.Context, t *redex.Tail, hb *time.Ticker, pos uint64) (uint64, error) {
	for {
		select {
		case <-ctx.Done():
			return pos, ctx.Err()
		case <-hb.C:
			st.deadline()
			if err := st.addHeartbeat(); err != nil {
				return pos, err
			}
			if err := st.flush(); err != nil {
				return pos, err
			}
		case e, ok := <-t.C():
			st.deadline()
			for n := 0; ; n++ {
				if !ok {
					if err := st.flush(); err != nil {
						return pos, err
					}
					terr := t.Err()
					if errors.Is(terr, redex.ErrLagged) {
						return pos, nil
					}
					return pos, st.refuse(RefuseUnavailable, pos, fmt.Sprintf("owner log tail ended: %v", terr))
				}
				if e.Seq != pos {
					return pos, fmt.Errorf("replication: tail delivered seq %d, want %d", e.Seq, pos)
				}
				pos++
				st.sent.Store(pos)
				if err := st.addEntry(e); err != nil {
					return pos, err
				}
				if n >= 4096 {
					break // let heartbeats and ctx in
				}
				select {
				case e, ok = <-t.C():
					continue
				default:
				}
				break
			}
			if err := st.flush(); err != nil {
				return pos, err
			}
		}
	}
}

func (st *stream) deadline() { _ = st.conn.SetWriteDeadline(time.Now().Add(st.s.o.WriteTimeout)) }

func (st *stream) addEntry(e redex.Entry) error {
	if !st.pw.entryFits(e) {
		if err := st.pw.endPacket(); err != nil {
			return err
		}
		if !st.pw.entryFits(e) {
			if len(e.Payload) > MaxEntryPayload {
				return st.refuse(RefuseTooLarge, e.Seq, fmt.Sprintf("entry of %d bytes exceeds MaxEntryPayload (%d)", len(e.Payload), MaxEntryPayload))
			}
			return st.pw.addFragmented(e)
		}
	}
	st.pw.addEntry(e)
	return nil
}

// addHeartbeat adds the owner's epoch and next seq to the packet being
// built. If the owner moved to a newer epoch than the subscription's, the
// stream ends with a stale-epoch refusal instead: the follower resubscribes
// once it has the new topology.
func (st *stream) addHeartbeat() error {
	if g := st.s.o.Verifier.Generation(); g != st.gen {
		st.gen = g
		if reason := st.s.verifyToken(st.token, st.sub.Shard, st.acceptedAt); reason != "" {
			if err := st.flush(); err != nil {
				return err
			}
			return st.refuse(RefuseDenied, 0, "the stream's token is no longer trusted: "+reason)
		}
	}
	epoch := st.s.o.Source.Epoch()
	if epoch > st.sub.Epoch {
		if err := st.flush(); err != nil {
			return err
		}
		return st.refuse(RefuseStaleEpoch, 0, "owner moved to a newer epoch than the subscription")
	}
	st.pw.msg = appendHeartbeat(st.pw.msg[:0], heartbeatMsg{Shard: st.sub.Shard, Epoch: epoch, OwnerNext: st.lg.NextSeq()})
	if !st.pw.fits(len(st.pw.msg)) {
		if err := st.pw.endPacket(); err != nil {
			return err
		}
	}
	st.pw.add(st.pw.msg)
	return nil
}

func (st *stream) flush() error {
	if err := st.pw.endPacket(); err != nil {
		return err
	}
	return st.pw.w.Flush()
}

// refuse ends the stream with a refusal the follower can act on.
func (st *stream) refuse(code RefuseCode, seq uint64, reason string) error {
	st.deadline()
	msg := refuseMsg{Shard: st.sub.Shard, Code: code, Epoch: st.s.o.Source.Epoch(), Seq: seq, Reason: reason}
	if err := st.pw.send(appendRefuse(nil, msg)); err != nil {
		return err
	}
	return refusalError(msg, st.sub.Epoch, seq)
}

func (s *Server) shardAcksLocked(shard uint16) *shardAcks {
	sa := s.acks[shard]
	if sa == nil {
		sa = &shardAcks{followers: map[string]*FollowerPosition{}, streams: map[string]int{}, changed: make(chan struct{})}
		s.acks[shard] = sa
	}
	return sa
}

func (s *Server) setConnected(sub subscribeMsg, on bool) {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	sa := s.shardAcksLocked(sub.Shard)
	fp := sa.followers[sub.Name]
	if fp == nil {
		fp = &FollowerPosition{Name: sub.Name}
		sa.followers[sub.Name] = fp
	}
	if on {
		fp.Epoch = sub.Epoch
		fp.Next = max(fp.Next, sub.From)
		sa.streams[sub.Name]++
	} else {
		sa.streams[sub.Name]--
	}
	fp.Connected = sa.streams[sub.Name] > 0
	s.raiseLocked(sa, fp.Next)
}

func (s *Server) recordAck(sub subscribeMsg, next uint64) {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	sa := s.shardAcksLocked(sub.Shard)
	fp := sa.followers[sub.Name]
	if fp == nil || next <= fp.Next {
		return // a stale ack never moves a position back
	}
	fp.Next = next
	s.raiseLocked(sa, next)
}

func (s *Server) raiseLocked(sa *shardAcks, next uint64) {
	if next > sa.best {
		sa.best = next
		close(sa.changed)
		sa.changed = make(chan struct{})
	}
}

// WaitReplicated returns nil once at least one follower has acknowledged
// seq (appended it, and synced it if the follower syncs before acking), the
// context's error wrapped when ctx ends first, or ErrServerClosed. It is the
// owner's side of ackPolicy Standby.
func (s *Server) WaitReplicated(ctx context.Context, shard uint16, seq uint64) error {
	for {
		s.ackMu.Lock()
		sa := s.shardAcksLocked(shard)
		if sa.best > seq {
			s.ackMu.Unlock()
			return nil
		}
		ch := sa.changed
		s.ackMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("replication: waiting for a follower of shard %d to have seq %d: %w", shard, seq, ctx.Err())
		case <-s.done:
			return ErrServerClosed
		}
	}
}

// FollowerPositions lists what the owner knows of the shard's followers,
// by name. Positions outlive disconnections (an acknowledged entry stays
// acknowledged).
func (s *Server) FollowerPositions(shard uint16) []FollowerPosition {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	sa := s.acks[shard]
	if sa == nil {
		return nil
	}
	out := make([]FollowerPosition, 0, len(sa.followers))
	for _, fp := range sa.followers {
		out = append(out, *fp)
	}
	slices.SortFunc(out, func(a, b FollowerPosition) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}
