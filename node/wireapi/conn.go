package wireapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/purplerain/mesh-operator/engine/wire"
	"github.com/purplerain/mesh-operator/node/dataapi"
)

// ErrConnection wraps every transport failure of a Conn: the request may or
// may not have been served (a retried ingest can store events twice).
var ErrConnection = errors.New("wireapi: connection failed")

// Conn is a client connection to one node's binary data API. Requests from
// concurrent callers are pipelined on it: each is written whole, tagged
// with its own stream id, and matched with its answer whatever order the
// node answers in. It is safe for concurrent use.
type Conn struct {
	nc net.Conn

	wmu sync.Mutex
	bw  *bufio.Writer
	seq uint64

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan answer
	err     error
	done    chan struct{}
}

// maxAnswerBytes bounds one answer a client buffers: a full poll page of
// the largest events fits.
const maxAnswerBytes = dataapi.MaxPollLimit * (MaxPacketPayload + wire.HeaderSize)

// answer is one response's first frame and the frames after it.
type answer struct {
	frames [][]byte
	err    error
}

// Dial connects to a node's wire port.
func Dial(ctx context.Context, addr string) (*Conn, error) {
	nc, err := dialTCP(ctx, addr)
	if err != nil {
		return nil, err
	}
	return NewConn(nc), nil
}

func dialTCP(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConnection, err)
	}
	return nc, nil
}

// NewConn runs the protocol over an established connection.
func NewConn(nc net.Conn) *Conn {
	c := &Conn{nc: nc, bw: bufio.NewWriterSize(nc, 64<<10), pending: map[uint64]chan answer{}, done: make(chan struct{})}
	go c.readLoop()
	return c
}

// Close closes the connection; requests waiting on it fail.
func (c *Conn) Close() error {
	c.shut(fmt.Errorf("%w: closed", ErrConnection))
	<-c.done
	return nil
}

// Err is the reason the connection ended, or nil while it is usable.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *Conn) shut(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	_ = c.nc.Close()
}

// Ingest sends one batch (1 to MaxBatch events) and returns one ack per
// event, in order, or the node's refusal as a *RefusedError.
func (c *Conn) Ingest(ctx context.Context, events []dataapi.Event) ([]dataapi.Ack, error) {
	if len(events) == 0 || len(events) > MaxBatch {
		return nil, fmt.Errorf("wireapi: a batch holds 1 to %d events, got %d", MaxBatch, len(events))
	}
	frames, err := c.roundTrip(ctx, func(p *packets) error { return appendIngestRequest(p, events) })
	if err != nil {
		return nil, err
	}
	if msgKind(frames[0][0]) != kindIngestOK || len(frames) != 1 {
		return nil, c.broken(fmt.Errorf("%w: unexpected answer to ingest", ErrProtocol))
	}
	acks, err := decodeIngestOK(frames[0])
	if err != nil {
		return nil, c.broken(err)
	}
	if len(acks) != len(events) {
		return nil, c.broken(fmt.Errorf("%w: %d acks for %d events", ErrProtocol, len(acks), len(events)))
	}
	return acks, nil
}

// Authenticate presents a permission token (identity binary form) for
// the requests after it. A node that requires authentication refuses a
// token granting neither identity.ScopeIngest nor ScopeConsume with code
// rejected; one that does not ignores it.
func (c *Conn) Authenticate(ctx context.Context, token []byte) error {
	frames, err := c.roundTrip(ctx, func(p *packets) error { return appendAuth(p, token) })
	if err != nil {
		return err
	}
	if msgKind(frames[0][0]) != kindAuthOK || len(frames) != 1 || len(frames[0]) != 1 {
		return c.broken(fmt.Errorf("%w: unexpected answer to auth", ErrProtocol))
	}
	return nil
}

// Poll reads one page (req.Limit 1 to dataapi.MaxPollLimit).
func (c *Conn) Poll(ctx context.Context, req dataapi.PollRequest) (dataapi.PollResponse, error) {
	frames, err := c.roundTrip(ctx, func(p *packets) error { return appendPollRequest(p, req) })
	if err != nil {
		return dataapi.PollResponse{}, err
	}
	if msgKind(frames[0][0]) != kindPollOK {
		return dataapi.PollResponse{}, c.broken(fmt.Errorf("%w: unexpected answer to poll", ErrProtocol))
	}
	resp, err := decodePollOKHead(frames[0])
	if err != nil {
		return dataapi.PollResponse{}, c.broken(err)
	}
	resp.Events = make([]dataapi.StoredEvent, 0, len(frames)-1)
	for _, f := range frames[1:] {
		e, err := decodeStoredEvent(f)
		if err != nil {
			return dataapi.PollResponse{}, c.broken(err)
		}
		resp.Events = append(resp.Events, e)
	}
	return resp, nil
}

// broken ends a connection whose peer broke the protocol.
func (c *Conn) broken(err error) error {
	c.shut(err)
	return fmt.Errorf("%w: %w", ErrConnection, err)
}

// roundTrip writes one request and waits for its answer's frames; a
// refusal is returned as a *RefusedError.
func (c *Conn) roundTrip(ctx context.Context, build func(*packets) error) ([][]byte, error) {
	ch := make(chan answer, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}

	p := newPackets(id, nil)
	if err := build(p); err != nil {
		forget()
		return nil, err
	}
	if len(p.buf) > MaxRequestBytes+len(p.hdrs)*wire.HeaderSize {
		forget()
		return nil, fmt.Errorf("wireapi: request of %d bytes exceeds %d", len(p.buf), MaxRequestBytes)
	}
	if err := c.write(ctx, p); err != nil {
		forget()
		return nil, err
	}
	select {
	case a := <-ch:
		if a.err != nil {
			return nil, a.err
		}
		if msgKind(a.frames[0][0]) == kindRefused {
			e, err := decodeRefused(a.frames[0])
			if err != nil {
				return nil, c.broken(err)
			}
			return nil, e
		}
		return a.frames, nil
	case <-ctx.Done():
		// The answer, when it comes, is dropped by the reader.
		forget()
		return nil, ctx.Err()
	}
}

// write sends a request's packets whole: a half-written request would
// corrupt the stream, so the context bounds the write only through a
// deadline, after which the connection is closed.
func (c *Conn) write(ctx context.Context, p *packets) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if d, ok := ctx.Deadline(); ok {
		_ = c.nc.SetWriteDeadline(d)
	} else {
		_ = c.nc.SetWriteDeadline(time.Time{})
	}
	_, err := c.bw.Write(p.stamp(&c.seq))
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		err = fmt.Errorf("%w: write: %w", ErrConnection, err)
		c.shut(err)
		return err
	}
	return nil
}

// readLoop reads answers and hands each to its caller; it ends with the
// connection and fails every request still waiting.
func (c *Conn) readLoop() {
	defer close(c.done)
	pr := newPacketReader(c.nc)
	var cur uint64
	var frames [][]byte
	var size int
	var err error
	reasm := wire.NewReassembler(maxEventFrame, MaxReassembly)
	for {
		var h wire.Header
		h, err = pr.header()
		if err != nil {
			break
		}
		var got [][]byte
		got, err = pr.payload(h, nil)
		if err != nil {
			break
		}
		if got, err = defragment(reasm, &h, got, cur != 0); err != nil {
			break
		}
		if cur == 0 {
			cur = h.StreamID
			if len(got[0]) == 0 {
				err = fmt.Errorf("%w: empty answer head", ErrProtocol)
				break
			}
		} else if h.StreamID != cur {
			err = fmt.Errorf("%w: packet of stream %d inside answer %d", ErrProtocol, h.StreamID, cur)
			break
		}
		frames = append(frames, got...)
		if size += int(h.PayloadLen); size > maxAnswerBytes {
			err = fmt.Errorf("%w: answer larger than %d bytes", ErrProtocol, maxAnswerBytes)
			break
		}
		if h.Flags&wire.FlagFin == 0 {
			continue
		}
		if reasm.Pending() != 0 {
			err = fmt.Errorf("%w: answer %d ended inside a fragmented event", ErrProtocol, cur)
			break
		}
		c.mu.Lock()
		ch := c.pending[cur]
		delete(c.pending, cur)
		c.mu.Unlock()
		if ch != nil {
			ch <- answer{frames: frames}
		} else if cur > c.lastID() {
			err = fmt.Errorf("%w: answer to stream %d that was never sent", ErrProtocol, cur)
			break
		}
		cur, frames, size = 0, nil, 0
	}
	c.shut(fmt.Errorf("%w: %w", ErrConnection, err))
	c.mu.Lock()
	for id, ch := range c.pending {
		ch <- answer{err: c.err}
		delete(c.pending, id)
	}
	c.mu.Unlock()
}

func (c *Conn) lastID() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nextID
}
