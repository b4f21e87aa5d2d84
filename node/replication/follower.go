package replication

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/purplerain/mesh-operator/engine/redex"
	"github.com/purplerain/mesh-operator/engine/wire"
)

// FollowerOptions configures a Follower.
type FollowerOptions struct {
	// Name identifies this follower to the owner (the node's member name).
	Name string
	// Shard is the shard followed.
	Shard uint16
	// Addr is the owner's wire address (host:port).
	Addr string
	// Log is the follower's copy of the shard log. Nothing else may append
	// to it while the follower runs.
	Log *redex.Log
	// Epoch is the node's current topology epoch. Required.
	Epoch func() uint64
	// Token returns a permission token (identity binary form) carrying
	// ScopeReplicate for the shard; it is called for every connection, so
	// short-lived tokens are fine. Required.
	Token func() ([]byte, error)
	// AckInterval is how often the position is acknowledged besides after
	// every appended batch. Default 100ms.
	AckInterval time.Duration
	// ReadTimeout: a connection that brings nothing (not even a heartbeat)
	// for this long is dropped and redialled. Default 5s; keep it well
	// above the owner's heartbeat interval.
	ReadTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between reconnections; it
	// doubles after each failed attempt and resets after a subscription is
	// accepted. Defaults 50ms and 2s.
	MinBackoff, MaxBackoff time.Duration
	// SyncBeforeAck fsyncs the log before each acknowledgement, so an ack
	// means the entries survive a crash of the follower, not only of the
	// owner. Without it an ack means the follower's log appended them
	// (durable as its fsync policy makes them).
	SyncBeforeAck bool
	// TruncateDiverged lets the follower repair a *DivergedError itself:
	// it cuts its log back where the owner says (redex TruncateFrom),
	// logs how many entries it dropped at warn level, and resubscribes.
	// Those entries exist nowhere else, so set it only where the topology
	// makes this owner authoritative (the node does after a failover).
	// Without it the follower stops with the *DivergedError.
	TruncateDiverged bool
	// Resync, when set, lets the follower start over when the owner has
	// pruned what it needs next: instead of stopping with a *LaggedError
	// it resubscribes asking for a resync (resync.go), resets its log to
	// the owner's first retained seq (redex ResetTo: every entry it held
	// goes), calls Resync with the owner's daemon snapshots, and goes on
	// replicating from there. Resync runs on the follower's goroutine
	// after the reset and before any later entry is appended. Without it
	// a lagged follower stops.
	Resync func(Resync)
	// StageResync, when set with Resync, gets the owner's resync (with
	// its daemon snapshots) before the log is reset, on the follower's
	// goroutine: a node stores the snapshots durably there, so a crash
	// right after the reset does not leave daemon state below the log's
	// new head.
	StageResync func(Resync)
	// Dial opens the connection. Default a net.Dialer with a 5s timeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Plaintext skips the wire session handshake (session.go). By default
	// the follower seals its connection and trusts only an owner that
	// signs the handshake with the key that issued its token (the cluster
	// key).
	Plaintext bool
	// RequireSignedOwner refuses an owner whose handshake is unsigned
	// (see session.go).
	RequireSignedOwner bool
	// TrustedOwnerKeys, when set, are the keys the owner must sign the
	// handshake with (besides the issuer of the follower's own token when
	// RequireSignedOwner is set); it is called for every connection, so a
	// credential rotation's trusted keys apply at the next one. An empty
	// answer refuses every owner rather than trusting any. Without a
	// signed owner anyone who answers on the owner's address can feed
	// the follower entries, or answer a resync and make it drop its log.
	TrustedOwnerKeys func() []ed25519.PublicKey
	// Logger receives connection-level messages. Default slog.Default().
	Logger *slog.Logger

	// beforeAppend, set by tests in this package, runs before each batch
	// is appended.
	beforeAppend func(n int)
}

// FollowerStatus is a follower's view of its replication.
type FollowerStatus struct {
	Shard uint16
	// Connected: a subscription is accepted and streaming.
	Connected bool
	// Next is the follower log's next seq.
	Next uint64
	// OwnerNext is the owner's next seq as last learned from the stream
	// (accept, entries, heartbeats).
	OwnerNext uint64
	// Lag is OwnerNext - Next (0 when caught up).
	Lag uint64
	// OwnerEpoch is the owner's epoch as last learned.
	OwnerEpoch uint64
	// Subscriptions counts accepted subscriptions (1 + reconnections).
	Subscriptions uint64
	// Resyncs counts the times the owner resynced this follower from its
	// log head (FollowerOptions.Resync).
	Resyncs uint64
	// LastErr is why the last connection ended or failed (nil if none
	// did); the follower retries it unless Err is set.
	LastErr error
}

// Follower replicates one shard's log from its owner into a local log:
// it subscribes from the local NextSeq, appends what the owner streams with
// redex.AppendReplicated, acknowledges its position, and reconnects with
// backoff when the owner goes away. It stops on Close or on an error that
// retrying cannot fix (see Err).
type Follower struct {
	o      FollowerOptions
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	status FollowerStatus
	err    error

	// wantResync (run's goroutine only): the last session ended lagged,
	// so the next one asks the owner for a resync.
	wantResync bool
}

// StartFollower starts following; it returns once the follower's goroutine
// runs (it connects in the background).
func StartFollower(o FollowerOptions) (*Follower, error) {
	if o.Log == nil || o.Epoch == nil || o.Token == nil || o.Addr == "" {
		return nil, errors.New("replication: FollowerOptions needs Log, Epoch, Token and Addr")
	}
	if len(o.Name) > maxNameLen {
		return nil, fmt.Errorf("replication: follower name longer than %d bytes", maxNameLen)
	}
	if o.AckInterval <= 0 {
		o.AckInterval = 100 * time.Millisecond
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 5 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 50 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(2*time.Second, o.MinBackoff)
	}
	if o.Dial == nil {
		d := &net.Dialer{Timeout: 5 * time.Second}
		o.Dial = d.DialContext
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Follower{
		o:      o,
		log:    o.Logger.With("component", "replication-follower", "shard", o.Shard, "owner", o.Addr),
		cancel: cancel,
		done:   make(chan struct{}),
		status: FollowerStatus{Shard: o.Shard},
	}
	go f.run(ctx)
	return f, nil
}

// Close stops the follower and waits for it. It does not close the log.
func (f *Follower) Close() error {
	f.cancel()
	<-f.done
	return nil
}

// Done is closed when the follower stopped (Close or a terminal error).
func (f *Follower) Done() <-chan struct{} { return f.done }

// Err is the terminal error once Done is closed: a *LaggedError (the owner
// pruned what this follower needs; resync from a snapshot), a
// *DivergedError (the local log holds seqs the owner never had), a
// *RefusedError with RefuseTooLarge, an error appending to the local log,
// or ErrFollowerClosed after Close. It is nil while the follower runs.
func (f *Follower) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// Status reports the follower's position and lag.
func (f *Follower) Status() FollowerStatus {
	next := f.o.Log.NextSeq()
	f.mu.Lock()
	s := f.status
	f.mu.Unlock()
	s.Next = next
	if s.OwnerNext > next {
		s.Lag = s.OwnerNext - next
	}
	return s
}

// terminal reports whether retrying cannot fix err.
func terminal(err error) bool {
	var (
		lag *LaggedError
		div *DivergedError
		ref *RefusedError
		app *appendError
	)
	switch {
	case errors.As(err, &lag), errors.As(err, &div), errors.As(err, &app):
		return true
	case errors.As(err, &ref):
		return ref.Code == RefuseTooLarge
	}
	return false
}

// appendError wraps a failure of the local log: the follower cannot make
// progress by reconnecting.
type appendError struct{ err error }

func (e *appendError) Error() string {
	return fmt.Sprintf("replication: append to follower log: %v", e.err)
}
func (e *appendError) Unwrap() error { return e.err }

func (f *Follower) run(ctx context.Context) {
	defer close(f.done)
	backoff := f.o.MinBackoff
	lastKind := ""
	for {
		accepted, err := f.session(ctx)
		f.mu.Lock()
		f.status.Connected = false
		f.mu.Unlock()
		if ctx.Err() != nil {
			f.setErr(ErrFollowerClosed)
			return
		}
		var div *DivergedError
		if f.o.TruncateDiverged && errors.As(err, &div) {
			had := f.o.Log.NextSeq()
			if terr := f.o.Log.TruncateFrom(div.CutFrom); terr != nil {
				err = &appendError{err: fmt.Errorf("cut back diverged suffix: %w", terr)}
			} else {
				f.log.Warn("replication: cut back a suffix the owner never had", "from", div.CutFrom, "dropped", had-div.CutFrom)
				f.mu.Lock()
				f.status.LastErr = err
				f.mu.Unlock()
				continue
			}
		}
		var lag *LaggedError
		if f.o.Resync != nil && errors.As(err, &lag) {
			f.log.Warn("replication: the owner pruned past this follower; asking for a resync from its log head", "err", err)
			f.wantResync = true
		} else if terminal(err) {
			f.log.Error("replication follower stopped", "err", err)
			f.setErr(err)
			return
		}
		f.mu.Lock()
		f.status.LastErr = err
		f.mu.Unlock()
		if accepted {
			backoff = f.o.MinBackoff
			lastKind = ""
		}
		// Warn when the reason changes (a refusal, an owner going away),
		// not on every retry of the same one.
		if kind := fmt.Sprintf("%T", err); kind != lastKind {
			f.log.Warn("replication connection ended; retrying", "err", err, "backoff", backoff)
			lastKind = kind
		} else {
			f.log.Debug("replication connection ended; retrying", "err", err, "backoff", backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			f.setErr(ErrFollowerClosed)
			return
		case <-t.C:
		}
		backoff = min(2*backoff, f.o.MaxBackoff)
	}
}

func (f *Follower) setErr(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

// session runs one connection: subscribe, stream, acknowledge. accepted
// reports whether the owner accepted the subscription.
func (f *Follower) session(ctx context.Context) (accepted bool, err error) {
	tok, err := f.o.Token()
	if err != nil {
		return false, fmt.Errorf("replication: get token: %w", err)
	}
	if len(tok) > wire.MaxControlToken {
		return false, fmt.Errorf("replication: token of %d bytes exceeds %d", len(tok), wire.MaxControlToken)
	}
	conn, err := f.o.Dial(ctx, "tcp", f.o.Addr)
	if err != nil {
		return false, fmt.Errorf("replication: dial owner: %w", err)
	}
	if conn, err = f.seal(ctx, conn, tok); err != nil {
		return false, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()

	shard := f.o.Shard
	epoch := f.o.Epoch()
	from := f.o.Log.NextSeq()
	sub := subscribeMsg{Shard: shard, From: from, Epoch: epoch, Name: f.o.Name, Token: tok}
	if from > f.o.Log.FirstSeq() {
		prev, err := f.o.Log.Get(from - 1)
		if err != nil {
			return false, &appendError{err: err}
		}
		sub.HasPrev, sub.Prev = true, idOf(prev)
	}
	pw := newPacketWriter(conn, shard, 4096)
	var wmu sync.Mutex // pw is shared with the periodic acker
	_ = conn.SetWriteDeadline(time.Now().Add(f.o.ReadTimeout))
	first := appendSubscribe(nil, sub)
	// With Resync every subscription may be answered with a resync: a
	// lagged one, or a diverged one (divergence.go).
	askResync := f.wantResync || f.o.Resync != nil
	if askResync {
		first = appendResyncSubscribe(nil, sub)
	}
	if err := pw.send(first); err != nil {
		return false, fmt.Errorf("replication: send subscribe: %w", err)
	}
	pr := newPacketReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(f.o.ReadTimeout))
	msgs, err := pr.next()
	if err != nil {
		return false, fmt.Errorf("replication: read subscribe answer: %w", err)
	}
	if len(msgs) != 1 {
		return false, fmt.Errorf("%w: subscribe answered with %d messages", ErrProtocol, len(msgs))
	}
	var acc acceptMsg
	// skipBelow: after a divergence resync whose head is below the log's
	// first seq, the streamed entries below it are skipped.
	skipBelow := uint64(0)
	if askResync && len(msgs[0]) > 0 && msgKind(msgs[0][0]) == kindResync {
		if acc, err = f.resync(conn, pr, msgs[0], epoch, from); err != nil {
			return false, err
		}
		from = acc.From
		skipBelow = f.o.Log.NextSeq()
	} else {
		m, err := decodeMessage(msgs[0])
		if err != nil {
			return false, err
		}
		switch m.kind {
		case kindRefuse:
			return false, refusalError(m.refuse, epoch, from)
		case kindAccept:
		default:
			return false, fmt.Errorf("%w: subscribe answered with message kind %d", ErrProtocol, m.kind)
		}
		acc = m.accept
		if acc.Shard != shard || acc.From != from {
			return false, fmt.Errorf("%w: accept for shard %d from %d, asked shard %d from %d", ErrProtocol, acc.Shard, acc.From, shard, from)
		}
		if acc.Epoch < epoch {
			return false, &StaleEpochError{Shard: shard, Refuser: SideFollower, Follower: epoch, Owner: acc.Epoch}
		}
	}
	f.wantResync = false
	f.mu.Lock()
	f.status.Connected = true
	f.status.OwnerNext = acc.OwnerNext
	f.status.OwnerEpoch = acc.Epoch
	f.status.Subscriptions++
	f.mu.Unlock()

	// acked is one past the last seq this session appended; the periodic
	// acker reports it too.
	var ackMu sync.Mutex
	acked := from
	sendAck := func() error {
		ackMu.Lock()
		next := acked
		ackMu.Unlock()
		wmu.Lock()
		defer wmu.Unlock()
		_ = conn.SetWriteDeadline(time.Now().Add(f.o.ReadTimeout))
		pw.msg = appendAck(pw.msg[:0], ackMsg{Shard: shard, Next: next})
		return pw.send(pw.msg)
	}
	if err := sendAck(); err != nil {
		return true, fmt.Errorf("replication: send ack: %w", err)
	}
	ackerDone := make(chan struct{})
	ackerStop := make(chan struct{})
	go func() {
		defer close(ackerDone)
		t := time.NewTicker(f.o.AckInterval)
		defer t.Stop()
		for {
			select {
			case <-ackerStop:
				return
			case <-t.C:
				if err := sendAck(); err != nil {
					conn.Close() // the reader notices and the session ends
					return
				}
			}
		}
	}()
	defer func() {
		close(ackerStop)
		<-ackerDone
	}()

	var entries []redex.Entry
	next := from
	for {
		_ = conn.SetReadDeadline(time.Now().Add(f.o.ReadTimeout))
		msgs, err := pr.next()
		if err != nil {
			return true, fmt.Errorf("replication: read stream: %w", err)
		}
		entries = entries[:0]
		var endErr error
		ownerNext := uint64(0)
		for _, b := range msgs {
			m, err := decodeMessage(b)
			if err != nil {
				return true, err
			}
			switch m.kind {
			case kindEntry:
				entries = append(entries, m.entry)
				ownerNext = max(ownerNext, m.entry.Seq+1)
			case kindHeartbeat:
				if cur := f.o.Epoch(); m.heartbeat.Epoch < cur {
					endErr = &StaleEpochError{Shard: shard, Refuser: SideFollower, Follower: cur, Owner: m.heartbeat.Epoch}
				}
				ownerNext = max(ownerNext, m.heartbeat.OwnerNext)
				f.mu.Lock()
				f.status.OwnerEpoch = m.heartbeat.Epoch
				f.mu.Unlock()
			case kindRefuse:
				endErr = refusalError(m.refuse, epoch, next+uint64(len(entries)))
			default:
				return true, fmt.Errorf("%w: owner sent message kind %d mid-stream", ErrProtocol, m.kind)
			}
			if endErr != nil {
				break
			}
		}
		if ownerNext > 0 {
			f.mu.Lock()
			f.status.OwnerNext = max(f.status.OwnerNext, ownerNext)
			f.mu.Unlock()
		}
		if skipBelow > 0 && len(entries) > 0 {
			entries = skipEntries(entries, skipBelow)
		}
		if len(entries) > 0 {
			if f.o.beforeAppend != nil {
				f.o.beforeAppend(len(entries))
			}
			if err := f.o.Log.AppendReplicatedBatch(entries); err != nil {
				return true, &appendError{err: err}
			}
			next = entries[len(entries)-1].Seq + 1
			if f.o.SyncBeforeAck {
				if err := f.o.Log.Sync(); err != nil {
					return true, &appendError{err: err}
				}
			}
			ackMu.Lock()
			acked = next
			ackMu.Unlock()
		}
		if endErr != nil {
			if len(entries) > 0 {
				_ = sendAck()
			}
			return true, endErr
		}
		if len(entries) > 0 {
			if err := sendAck(); err != nil {
				return true, fmt.Errorf("replication: send ack: %w", err)
			}
		}
	}
}

// resync handles the owner's resync answer (resync.go): it reads the daemon
// snapshots that follow, resets the log to the owner's head, hands the
// snapshots to FollowerOptions.Resync and returns the stream's start as
// an accept would.
func (f *Follower) resync(conn net.Conn, pr *packetReader, b []byte, epoch, from uint64) (acceptMsg, error) {
	r, err := decodeResync(b)
	if err != nil {
		return acceptMsg{}, err
	}
	if r.Shard != f.o.Shard {
		return acceptMsg{}, fmt.Errorf("%w: resync of shard %d, asked shard %d", ErrProtocol, r.Shard, f.o.Shard)
	}
	// A head beyond from: this follower lagged. Otherwise the owner found
	// its log diverged (divergence.go).
	diverged := r.First <= from
	if r.Epoch < epoch {
		return acceptMsg{}, &StaleEpochError{Shard: r.Shard, Refuser: SideFollower, Follower: epoch, Owner: r.Epoch}
	}
	asm := snapshotAssembler{want: int(r.Daemons)}
	for !asm.done() {
		_ = conn.SetReadDeadline(time.Now().Add(f.o.ReadTimeout))
		msgs, err := pr.next()
		if err != nil {
			return acceptMsg{}, fmt.Errorf("replication: read daemon snapshots: %w", err)
		}
		for _, m := range msgs {
			c, err := decodeChunk(m)
			if err != nil {
				return acceptMsg{}, err
			}
			if err := asm.add(c); err != nil {
				return acceptMsg{}, err
			}
		}
	}
	had, hadFirst := f.o.Log.NextSeq(), f.o.Log.FirstSeq()
	if f.o.StageResync != nil {
		// Before the reset, which is durable: see StageResync.
		f.o.StageResync(Resync{Shard: r.Shard, First: r.First, OwnerNext: r.OwnerNext, Daemons: asm.snaps, Diverged: diverged})
	}
	if diverged {
		// Seqs never go back: drop every entry, leaving the log empty at
		// its first seq; the reset below moves it up to the head.
		if err := f.o.Log.TruncateFrom(hadFirst); err != nil {
			return acceptMsg{}, &appendError{err: fmt.Errorf("drop a diverged log from %d: %w", hadFirst, err)}
		}
	}
	if r.First > f.o.Log.NextSeq() {
		if err := f.o.Log.ResetTo(r.First); err != nil {
			return acceptMsg{}, &appendError{err: fmt.Errorf("reset to the owner's head %d: %w", r.First, err)}
		}
	}
	f.log.Warn("replication: resynced from the owner's log head; the entries this follower held were dropped",
		"diverged", diverged, "held_from", hadFirst, "held_next", had, "head", r.First, "owner_next", r.OwnerNext, "daemon_snapshots", len(asm.snaps))
	f.o.Resync(Resync{Shard: r.Shard, First: r.First, OwnerNext: r.OwnerNext, Daemons: asm.snaps, Diverged: diverged})
	f.mu.Lock()
	f.status.Resyncs++
	f.mu.Unlock()
	return acceptMsg{Shard: r.Shard, Epoch: r.Epoch, From: r.First, OwnerNext: r.OwnerNext, OwnerFirst: r.First}, nil
}

// skipEntries drops the entries below seq (in order) from es, in place.
func skipEntries(es []redex.Entry, seq uint64) []redex.Entry {
	i := 0
	for i < len(es) && es[i].Seq < seq {
		i++
	}
	return es[i:]
}
