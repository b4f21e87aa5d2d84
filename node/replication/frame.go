package replication

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"unicode/utf8"

	"github.com/purplerain/mesh-operator/engine/redex"
	"github.com/purplerain/mesh-operator/engine/wire"
)

// Subprotocol is the wire header subprotocol id of every replication packet.
// A node that multiplexes its wire port hands a connection whose first
// packet carries this id to Server.ServeConn.
const Subprotocol uint16 = 0x0052 // 'R'

// IsReplication reports whether b starts with a valid wire header of a
// replication packet: a node multiplexing its wire port peeks at the first
// wire.HeaderSize bytes of a connection and hands it to Server.ServeConn
// when this is true.
func IsReplication(b []byte) bool {
	h, err := wire.DecodeHeader(b)
	return err == nil && h.Subprotocol == Subprotocol
}

// msgKind is the first byte of every replication message.
type msgKind uint8

const (
	kindSubscribe msgKind = 1 // follower → owner, first packet only
	kindAccept    msgKind = 2 // owner → follower, answers subscribe
	kindRefuse    msgKind = 3 // owner → follower, answers subscribe or ends a stream
	kindEntry     msgKind = 4 // owner → follower, one replicated log entry
	kindAck       msgKind = 5 // follower → owner, durable position
	kindHeartbeat msgKind = 6 // owner → follower, epoch and owner's next seq
)

// RefuseCode says why an owner refused or ended a subscription.
type RefuseCode uint8

// Refuse codes.
const (
	RefuseDenied      RefuseCode = 1 // token missing, invalid or without ScopeReplicate for the shard
	RefuseStaleEpoch  RefuseCode = 2 // the follower's epoch is older than the owner's
	RefuseUnknown     RefuseCode = 3 // the owner does not hold the shard's log
	RefuseLagged      RefuseCode = 4 // the owner pruned what the follower needs next
	RefuseDiverged    RefuseCode = 5 // the follower holds seqs the owner never had
	RefuseTooLarge    RefuseCode = 6 // an entry is larger than MaxEntryPayload
	RefuseUnavailable RefuseCode = 7 // the owner's log closed or the server is shutting down

	refuseMax = RefuseUnavailable
)

func (c RefuseCode) String() string {
	switch c {
	case RefuseDenied:
		return "denied"
	case RefuseStaleEpoch:
		return "stale epoch"
	case RefuseUnknown:
		return "unknown shard"
	case RefuseLagged:
		return "lagged"
	case RefuseDiverged:
		return "diverged"
	case RefuseTooLarge:
		return "entry too large"
	case RefuseUnavailable:
		return "unavailable"
	}
	return fmt.Sprintf("refuse(%d)", uint8(c))
}

const (
	maxNameLen   = 255
	maxReasonLen = 1024
	// entryOverhead is what one entry costs in a packet besides its
	// payload: the wire frame length prefix, the kind byte, seq, time and
	// flags.
	entryOverhead = wire.FrameLenSize + 1 + 8 + 8 + 4
	// MaxEntryPayload is the largest log entry payload replication
	// carries: the RedEX default, so every entry a node's shard log
	// accepts replicates. An entry larger than one packet travels as
	// fragments (fragment.go); a larger one is refused with
	// RefuseTooLarge.
	MaxEntryPayload = redex.DefaultMaxPayload
)

// Protocol errors. A peer that sends something outside the protocol gets its
// connection closed.
var (
	ErrProtocol     = errors.New("replication: protocol violation")
	ErrShortMessage = errors.New("replication: message truncated")
)

type subscribeMsg struct {
	Shard uint16
	From  uint64
	Epoch uint64
	// Prev identifies the follower's entry at From-1 (when HasPrev), so
	// the owner can tell a follower whose last entry is not its own.
	HasPrev bool
	Prev    entryID
	Name    string
	Token   []byte // identity binary form
}

// entryID is what the log-matching check compares: an entry's stamp, flags
// and payload checksum (CRC-32C).
type entryID struct {
	Time  int64
	Flags redex.Flags
	CRC   uint32
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func idOf(e redex.Entry) entryID {
	return entryID{Time: e.Time, Flags: e.Flags, CRC: crc32.Checksum(e.Payload, castagnoli)}
}

type acceptMsg struct {
	Shard      uint16
	Epoch      uint64 // the owner's
	From       uint64 // first seq the stream carries
	OwnerNext  uint64
	OwnerFirst uint64
}

type refuseMsg struct {
	Shard  uint16
	Code   RefuseCode
	Epoch  uint64 // the owner's
	Seq    uint64 // lagged: owner's first retained; diverged: owner's next; too large: the entry
	Reason string
}

type ackMsg struct {
	Shard uint16
	Next  uint64 // every seq below Next is durably appended at the follower
}

type heartbeatMsg struct {
	Shard     uint16
	Epoch     uint64
	OwnerNext uint64
}

func appendSubscribe(dst []byte, m subscribeMsg) []byte {
	dst = append(dst, byte(kindSubscribe))
	dst = binary.LittleEndian.AppendUint16(dst, m.Shard)
	dst = binary.LittleEndian.AppendUint64(dst, m.From)
	dst = binary.LittleEndian.AppendUint64(dst, m.Epoch)
	if m.HasPrev {
		dst = append(dst, 1)
		dst = binary.LittleEndian.AppendUint64(dst, uint64(m.Prev.Time))
		dst = binary.LittleEndian.AppendUint32(dst, uint32(m.Prev.Flags))
		dst = binary.LittleEndian.AppendUint32(dst, m.Prev.CRC)
	} else {
		dst = append(dst, 0)
	}
	dst = append(dst, byte(len(m.Name)))
	dst = append(dst, m.Name...)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(m.Token)))
	return append(dst, m.Token...)
}

func appendAccept(dst []byte, m acceptMsg) []byte {
	dst = append(dst, byte(kindAccept))
	dst = binary.LittleEndian.AppendUint16(dst, m.Shard)
	dst = binary.LittleEndian.AppendUint64(dst, m.Epoch)
	dst = binary.LittleEndian.AppendUint64(dst, m.From)
	dst = binary.LittleEndian.AppendUint64(dst, m.OwnerNext)
	return binary.LittleEndian.AppendUint64(dst, m.OwnerFirst)
}

func appendRefuse(dst []byte, m refuseMsg) []byte {
	dst = append(dst, byte(kindRefuse))
	dst = binary.LittleEndian.AppendUint16(dst, m.Shard)
	dst = append(dst, byte(m.Code))
	dst = binary.LittleEndian.AppendUint64(dst, m.Epoch)
	dst = binary.LittleEndian.AppendUint64(dst, m.Seq)
	r := m.Reason
	if len(r) > maxReasonLen {
		r = r[:maxReasonLen]
	}
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(r)))
	return append(dst, r...)
}

// appendEntry is the frame of one replicated entry after the kind byte:
// seq u64 | time i64 | flags u32 | payload (the rest of the message).
func appendEntry(dst []byte, e redex.Entry) []byte {
	dst = append(dst, byte(kindEntry))
	dst = binary.LittleEndian.AppendUint64(dst, e.Seq)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(e.Time))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(e.Flags))
	return append(dst, e.Payload...)
}

func appendAck(dst []byte, m ackMsg) []byte {
	dst = append(dst, byte(kindAck))
	dst = binary.LittleEndian.AppendUint16(dst, m.Shard)
	return binary.LittleEndian.AppendUint64(dst, m.Next)
}

func appendHeartbeat(dst []byte, m heartbeatMsg) []byte {
	dst = append(dst, byte(kindHeartbeat))
	dst = binary.LittleEndian.AppendUint16(dst, m.Shard)
	dst = binary.LittleEndian.AppendUint64(dst, m.Epoch)
	return binary.LittleEndian.AppendUint64(dst, m.OwnerNext)
}

// message is one decoded replication message: exactly one of the fields
// matching kind is meaningful.
type message struct {
	kind      msgKind
	subscribe subscribeMsg
	accept    acceptMsg
	refuse    refuseMsg
	entry     redex.Entry // Payload aliases the packet
	ack       ackMsg
	heartbeat heartbeatMsg
}

// decodeMessage parses one message; the whole of b must be the message
// (an entry's payload is the rest of b). Byte slices alias b. It never
// panics and never allocates in proportion to a length field it has not
// checked against b (see FuzzDecodePacketStream).
func decodeMessage(b []byte) (message, error) {
	if len(b) == 0 {
		return message{}, ErrShortMessage
	}
	c := cur{b: b[1:]}
	m := message{kind: msgKind(b[0])}
	switch m.kind {
	case kindSubscribe:
		m.subscribe = subscribeMsg{Shard: c.u16(), From: c.u64(), Epoch: c.u64()}
		switch c.u8() {
		case 0:
		case 1:
			m.subscribe.HasPrev = true
			m.subscribe.Prev = entryID{Time: int64(c.u64()), Flags: redex.Flags(c.u32()), CRC: c.u32()}
		default:
			if c.err == nil {
				c.err = fmt.Errorf("%w: bad previous-entry marker", ErrProtocol)
			}
		}
		name := c.take(int(c.u8()))
		m.subscribe.Name = string(name)
		tok := c.take(int(c.u16()))
		if len(tok) > 0 {
			m.subscribe.Token = tok
		}
		if c.err == nil && !utf8.Valid(name) {
			c.err = fmt.Errorf("%w: follower name is not UTF-8", ErrProtocol)
		}
	case kindAccept:
		m.accept = acceptMsg{Shard: c.u16(), Epoch: c.u64(), From: c.u64(), OwnerNext: c.u64(), OwnerFirst: c.u64()}
	case kindRefuse:
		m.refuse = refuseMsg{Shard: c.u16(), Code: RefuseCode(c.u8()), Epoch: c.u64(), Seq: c.u64()}
		n := int(c.u16())
		if c.err == nil && n > maxReasonLen {
			c.err = fmt.Errorf("%w: refuse reason of %d bytes", ErrProtocol, n)
		}
		m.refuse.Reason = string(c.take(n))
		if c.err == nil && (m.refuse.Code == 0 || m.refuse.Code > refuseMax) {
			c.err = fmt.Errorf("%w: unknown refuse code %d", ErrProtocol, m.refuse.Code)
		}
	case kindEntry:
		m.entry = redex.Entry{Seq: c.u64(), Time: int64(c.u64()), Flags: redex.Flags(c.u32())}
		if c.err == nil {
			if len(c.b) > 0 {
				m.entry.Payload = c.b
			}
			c.b = nil
		}
	case kindAck:
		m.ack = ackMsg{Shard: c.u16(), Next: c.u64()}
	case kindHeartbeat:
		m.heartbeat = heartbeatMsg{Shard: c.u16(), Epoch: c.u64(), OwnerNext: c.u64()}
	default:
		return message{}, fmt.Errorf("%w: unknown message kind %d", ErrProtocol, b[0])
	}
	if c.err != nil {
		return message{}, c.err
	}
	if len(c.b) != 0 {
		return message{}, fmt.Errorf("%w: %d trailing bytes after message kind %d", ErrProtocol, len(c.b), b[0])
	}
	return m, nil
}

type cur struct {
	b   []byte
	err error
}

func (c *cur) take(n int) []byte {
	if c.err != nil {
		return nil
	}
	if len(c.b) < n {
		c.err = fmt.Errorf("%w: need %d bytes, have %d", ErrShortMessage, n, len(c.b))
		return nil
	}
	out := c.b[:n:n]
	c.b = c.b[n:]
	return out
}

func (c *cur) u8() uint8 {
	if b := c.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (c *cur) u16() uint16 {
	if b := c.take(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (c *cur) u32() uint32 {
	if b := c.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (c *cur) u64() uint64 {
	if b := c.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// packetWriter assembles replication packets in place (header space, then
// wire event frames, one message each) and writes them to a buffered
// stream. Packets are numbered from 1 in the header's Sequence field.
type packetWriter struct {
	w          *bufio.Writer
	buf        []byte
	count      int
	shard      uint16
	seq        uint64
	maxPayload int
	msg        []byte // scratch for one encoded message
	// frag holds the fragment fields of the packet being built (zero for
	// an ordinary packet).
	frag fragmentMark
}

func newPacketWriter(w io.Writer, shard uint16, maxPayload int) *packetWriter {
	return &packetWriter{
		w:          bufio.NewWriterSize(w, 64<<10),
		buf:        make([]byte, wire.HeaderSize, wire.HeaderSize+maxPayload),
		shard:      shard,
		maxPayload: maxPayload,
	}
}

// room is how many payload bytes the packet being built can still take.
func (p *packetWriter) room() int { return p.maxPayload - (len(p.buf) - wire.HeaderSize) }

// fits reports whether a message of n bytes fits the packet being built.
func (p *packetWriter) fits(n int) bool {
	return p.count < wire.MaxEventsPerPacket && wire.FrameLenSize+n <= p.room()
}

// add appends one encoded message (a frame) to the packet being built; the
// caller checked fits.
func (p *packetWriter) add(msg []byte) {
	p.buf = binary.LittleEndian.AppendUint32(p.buf, uint32(len(msg)))
	p.buf = append(p.buf, msg...)
	p.count++
}

// addEntry appends one entry without an intermediate copy.
func (p *packetWriter) addEntry(e redex.Entry) {
	p.buf = binary.LittleEndian.AppendUint32(p.buf, uint32(entryOverhead-wire.FrameLenSize+len(e.Payload)))
	p.buf = appendEntry(p.buf, e)
	p.count++
}

// entryFits reports whether e fits the packet being built.
func (p *packetWriter) entryFits(e redex.Entry) bool {
	return p.count < wire.MaxEventsPerPacket && entryOverhead+len(e.Payload) <= p.room()
}

// endPacket writes the packet being built (if any) into the buffer.
func (p *packetWriter) endPacket() error {
	if p.count == 0 {
		return nil
	}
	p.seq++
	h := wire.Header{
		Subprotocol: Subprotocol,
		StreamID:    uint64(p.shard),
		Sequence:    p.seq,
		PayloadLen:  uint16(len(p.buf) - wire.HeaderSize),
		EventCount:  uint16(p.count),
	}
	p.frag.mark(&h)
	h.Put((*[wire.HeaderSize]byte)(p.buf[:wire.HeaderSize]))
	_, err := p.w.Write(p.buf)
	p.buf, p.count = p.buf[:wire.HeaderSize], 0
	return err
}

// send writes msg as a packet of its own and flushes.
func (p *packetWriter) send(msg []byte) error {
	if err := p.endPacket(); err != nil {
		return err
	}
	p.add(msg)
	if err := p.endPacket(); err != nil {
		return err
	}
	return p.w.Flush()
}

// packetReader reads replication packets from a stream and checks their
// framing: the subprotocol, no sealing (not yet supported), consecutive
// packet numbers from 1.
type packetReader struct {
	r       *bufio.Reader
	hdr     [wire.HeaderSize]byte
	payload []byte
	events  [][]byte
	seq     uint64
	reasm   *wire.Reassembler // fragmented entries, made on first use
}

func newPacketReader(r io.Reader) *packetReader {
	return &packetReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// next reads one packet and returns its messages' bytes (aliasing the
// reader's buffer until the next call).
func (pr *packetReader) next() ([][]byte, error) {
	if _, err := io.ReadFull(pr.r, pr.hdr[:]); err != nil {
		return nil, err
	}
	h, err := wire.DecodeHeader(pr.hdr[:])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if h.Subprotocol != Subprotocol {
		return nil, fmt.Errorf("%w: subprotocol %#x, want %#x", ErrProtocol, h.Subprotocol, Subprotocol)
	}
	if h.Flags&wire.FlagEncrypted != 0 {
		// Sealed packets are opened by the session layer (session.go)
		// before they get here; one that arrives sealed had no session.
		return nil, fmt.Errorf("%w: a sealed packet without a session", ErrProtocol)
	}
	if h.Sequence != pr.seq+1 {
		return nil, fmt.Errorf("%w: packet %d, want %d", ErrProtocol, h.Sequence, pr.seq+1)
	}
	if h.EventCount == 0 {
		return nil, fmt.Errorf("%w: empty packet", ErrProtocol)
	}
	if cap(pr.payload) < int(h.PayloadLen) {
		pr.payload = make([]byte, h.PayloadLen) // bounded by 64 KiB
	}
	pr.payload = pr.payload[:h.PayloadLen]
	if _, err := io.ReadFull(pr.r, pr.payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	pr.events, err = wire.DecodeEvents(pr.events[:0], pr.payload, int(h.EventCount))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if err := pr.defragment(&h); err != nil {
		return nil, err
	}
	pr.seq = h.Sequence
	return pr.events, nil
}
