package wireapi

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/purplerain/mesh-operator/engine/wire"
	"github.com/purplerain/mesh-operator/node/dataapi"
)

// Subprotocol is the wire header subprotocol id of every data API packet.
const Subprotocol uint16 = 0x0044 // 'D'

// IsDataAPI reports whether b starts with a valid wire header of a data API
// packet: the node's wire port peeks at a connection's first
// wire.HeaderSize bytes and hands it to Server.ServeConn when this holds.
func IsDataAPI(b []byte) bool {
	h, err := wire.DecodeHeader(b)
	return err == nil && h.Subprotocol == Subprotocol
}

// Limits of the protocol. Both ends enforce them; a peer that exceeds one
// is broken or hostile and loses its connection.
const (
	// MaxPacketPayload is the largest packet payload either side sends.
	MaxPacketPayload = wire.MaxPlainPayload
	// MaxFrame is the largest frame one packet carries (its bytes after
	// the 4-byte length prefix). A message head must fit; an event frame
	// larger than this travels as fragments (engine/wire fragment.go).
	MaxFrame = MaxPacketPayload - wire.FrameLenSize
	// MaxRequestBytes bounds the payload bytes of one request (all its
	// packets).
	MaxRequestBytes = 16 << 20
	// MaxBatch is the most events one ingest request carries (the HTTP
	// data API's limit).
	MaxBatch = dataapi.MaxBatch
	// MaxEventSize is the largest key plus payload of one ingested event
	// (and the largest payload a poll answer carries): events larger than
	// a packet are fragmented, and both ends refuse larger ones with an
	// error matching ErrFrameTooLarge and wire.ErrEventOversize.
	MaxEventSize = 8 << 20
	// maxEventFrame is the largest event frame either direction carries.
	maxEventFrame = MaxEventSize + storedEventHeader
	// MaxReassembly bounds the bytes of fragmented events one side holds
	// while reassembling them.
	MaxReassembly = 2 * maxEventFrame
)

// Protocol errors.
var (
	// ErrProtocol: the peer sent something outside the protocol; the
	// connection is closed.
	ErrProtocol = errors.New("wireapi: protocol violation")
	// ErrFrameTooLarge: a message head does not fit one packet, or an
	// event is larger than MaxEventSize.
	ErrFrameTooLarge = errors.New("wireapi: frame too large")
)

// msgKind is the first byte of a request's or response's first frame.
type msgKind uint8

const (
	kindIngest   msgKind = 1    // client → node: events follow as frames
	kindPoll     msgKind = 2    // client → node: limit, cursor
	kindAuth     msgKind = 3    // client → node: permission token
	kindAuthOK   msgKind = 0x83 // node → client: token accepted
	kindTopology msgKind = 4    // client → node: the node's topology, please
	kindTopoOK   msgKind = 0x84 // node → client: topology JSON follows as one frame
	kindIngestOK msgKind = 0x81 // node → client: one shard per event
	kindPollOK   msgKind = 0x82 // node → client: flags, cursor, stalled shards; events follow
	kindRefused  msgKind = 0x8f // node → client: typed refusal
)

// packets lays out one message's frames as consecutive packets of one
// stream. Sequence numbers are stamped later, when the packets are written,
// so they follow the order packets go out on the connection.
type packets struct {
	buf    []byte
	offs   []int
	hdrs   []wire.Header
	stream uint64
	fragID uint16 // id of the last fragmented event
}

func newPackets(stream uint64, buf []byte) *packets {
	return &packets{buf: buf[:0], stream: stream}
}

// reserve opens room for a frame of n bytes, starting a new packet when the
// current one is full, and appends the frame's length prefix: the caller
// appends exactly n bytes next.
func (p *packets) reserve(n int) error {
	if n > MaxFrame {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrFrameTooLarge, n, MaxFrame)
	}
	last := len(p.hdrs) - 1
	if last < 0 || int(p.hdrs[last].PayloadLen)+wire.FrameLenSize+n > MaxPacketPayload || p.hdrs[last].EventCount == wire.MaxEventsPerPacket ||
		wire.IsFragment(&p.hdrs[last]) {
		p.offs = append(p.offs, len(p.buf))
		p.buf = append(p.buf, make([]byte, wire.HeaderSize)...)
		p.hdrs = append(p.hdrs, wire.Header{Subprotocol: Subprotocol, StreamID: p.stream})
		last++
	}
	p.hdrs[last].PayloadLen += uint16(wire.FrameLenSize + n)
	p.hdrs[last].EventCount++
	p.buf = binary.LittleEndian.AppendUint32(p.buf, uint32(n))
	return nil
}

// fragment lays out one event frame larger than MaxFrame as fragment
// packets of one frame each (starting after the current packet). The frame
// must be at most maxEventFrame bytes.
func (p *packets) fragment(frame []byte) error {
	chunks, err := wire.SplitEvent(frame, MaxFrame, maxEventFrame)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrFrameTooLarge, err)
	}
	p.fragID++
	for i, c := range chunks {
		p.offs = append(p.offs, len(p.buf))
		p.buf = append(p.buf, make([]byte, wire.HeaderSize)...)
		h := wire.Header{Subprotocol: Subprotocol, StreamID: p.stream, PayloadLen: uint16(wire.FrameLenSize + len(c)), EventCount: 1}
		wire.FragmentHeader(&h, p.fragID, i, len(chunks))
		p.hdrs = append(p.hdrs, h)
		p.buf = binary.LittleEndian.AppendUint32(p.buf, uint32(len(c)))
		p.buf = append(p.buf, c...)
	}
	return nil
}

// stamp numbers the packets after *seq, marks the last with FlagFin and
// writes their headers.
func (p *packets) stamp(seq *uint64) []byte {
	for i := range p.hdrs {
		*seq++
		h := p.hdrs[i]
		h.Sequence = *seq
		if i == len(p.hdrs)-1 {
			h.Flags |= wire.FlagFin
		}
		h.Put((*[wire.HeaderSize]byte)(p.buf[p.offs[i] : p.offs[i]+wire.HeaderSize]))
	}
	return p.buf
}

// packetReader reads the packets of one direction of a connection and
// checks their headers: this subprotocol, unsealed, numbered 1, 2, 3, …,
// at least one frame, a non-zero stream id and no flag but FlagFin.
type packetReader struct {
	r   *bufio.Reader
	hdr [wire.HeaderSize]byte
	seq uint64
}

func newPacketReader(r io.Reader) *packetReader {
	return &packetReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// header reads and checks the next packet's header.
func (pr *packetReader) header() (wire.Header, error) {
	if _, err := io.ReadFull(pr.r, pr.hdr[:]); err != nil {
		return wire.Header{}, err
	}
	h, err := wire.DecodeHeader(pr.hdr[:])
	if err != nil {
		return h, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	switch {
	case h.Subprotocol != Subprotocol:
		return h, fmt.Errorf("%w: subprotocol %#x, want %#x", ErrProtocol, h.Subprotocol, Subprotocol)
	case h.Flags&wire.FlagEncrypted != 0:
		// Sealed packets are opened by the session layer (DialSealed,
		// ServerOptions.Session) before they get here; one that arrives
		// sealed had no session.
		return h, fmt.Errorf("%w: a sealed packet without a session", ErrProtocol)
	case h.Flags&^wire.FlagFin != 0:
		return h, fmt.Errorf("%w: flags %#x, only FIN is used", ErrProtocol, h.Flags)
	case h.Sequence != pr.seq+1:
		return h, fmt.Errorf("%w: packet %d, want %d", ErrProtocol, h.Sequence, pr.seq+1)
	case h.EventCount == 0:
		return h, fmt.Errorf("%w: empty packet", ErrProtocol)
	case h.StreamID == 0:
		return h, fmt.Errorf("%w: stream id 0", ErrProtocol)
	}
	pr.seq++
	return h, nil
}

// payload reads h's payload into a new buffer (the frames returned alias
// it and may be kept) and splits it into frames.
func (pr *packetReader) payload(h wire.Header, frames [][]byte) ([][]byte, error) {
	buf := make([]byte, h.PayloadLen) // at most 64 KiB, accounted by the caller
	if _, err := io.ReadFull(pr.r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	frames, err := wire.DecodeEvents(frames[:0], buf, int(h.EventCount))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return frames, nil
}

// defragment passes a fragment packet's frame to the reassembler: it
// returns no frames until the last fragment, then the whole event as one
// frame. Other packets' frames pass unchanged. inMessage says whether a
// message is under way (a message never starts with a fragment: its head
// frame comes first, in a packet of its own kind).
func defragment(r *wire.Reassembler, h *wire.Header, frames [][]byte, inMessage bool) ([][]byte, error) {
	if !wire.IsFragment(h) {
		return frames, nil
	}
	if !inMessage || len(frames) != 1 {
		return nil, fmt.Errorf("%w: fragment packet outside a message or with %d frames", ErrProtocol, len(frames))
	}
	ev, err := r.Add(h, frames[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if ev == nil {
		return frames[:0], nil
	}
	return append(frames[:0], ev), nil
}

// reader is a little-endian cursor over one frame that remembers the first
// shortfall, so decoders check once at the end.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) take(n int) []byte {
	if r.bad || n < 0 || len(r.b) < n {
		r.bad = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8 {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.take(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (r *reader) str() string {
	n := int(r.u16())
	b := r.take(n)
	if b != nil && !utf8.Valid(b) {
		r.bad = true
	}
	return string(b)
}

// done reports a truncated frame or trailing bytes.
func (r *reader) done(what string) error {
	if r.bad {
		return fmt.Errorf("%w: %s truncated", ErrProtocol, what)
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %d bytes after %s", ErrProtocol, len(r.b), what)
	}
	return nil
}

func appendStr(b []byte, s string) []byte {
	if len(s) > 0xffff {
		s = s[:0xffff]
	}
	b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func strSize(s string) int { return 2 + min(len(s), 0xffff) }

// ingest event frame: keyLen u16 | key | payload.

func eventFrameSize(e dataapi.Event) int { return 2 + len(e.Key) + len(e.Payload) }

func decodeEvent(f []byte) (dataapi.Event, error) {
	if len(f) < 2 {
		return dataapi.Event{}, fmt.Errorf("%w: event frame truncated", ErrProtocol)
	}
	n := int(binary.LittleEndian.Uint16(f))
	if len(f)-2 < n {
		return dataapi.Event{}, fmt.Errorf("%w: event key runs past its frame", ErrProtocol)
	}
	var e dataapi.Event
	if n > 0 {
		e.Key = f[2 : 2+n : 2+n]
	}
	e.Payload = f[2+n:]
	return e, nil
}

// poll event frame: shard u16 | seq u64 | time i64 | payload.

const storedEventHeader = 2 + 8 + 8

func decodeStoredEvent(f []byte) (dataapi.StoredEvent, error) {
	if len(f) < storedEventHeader {
		return dataapi.StoredEvent{}, fmt.Errorf("%w: poll event frame truncated", ErrProtocol)
	}
	return dataapi.StoredEvent{
		Shard:   binary.LittleEndian.Uint16(f),
		Seq:     binary.LittleEndian.Uint64(f[2:]),
		Time:    int64(binary.LittleEndian.Uint64(f[10:])),
		Payload: f[storedEventHeader:],
	}, nil
}
