package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

const (
	// MaxPayloadSize is the largest payload a header can describe.
	MaxPayloadSize = math.MaxUint16
	// MaxPlainPayload is the largest events payload that still fits once
	// sealed (ciphertext plus tag within MaxPayloadSize).
	MaxPlainPayload = MaxPayloadSize - TagSize
	// DefaultMaxPayload keeps a sealed packet within 8 KiB, a jumbo frame
	// with headroom (the Net default).
	DefaultMaxPayload = 8192 - HeaderSize - TagSize
	// MaxEventsPerPacket is the most events a header can count.
	MaxEventsPerPacket = math.MaxUint16
)

// Packet errors.
var (
	// ErrPacketFull: Builder.Add refused an event; the packet is unchanged.
	ErrPacketFull = errors.New("wire: event does not fit in packet")
	// ErrTooManyEvents: BuildPacket refused a batch that does not fit whole.
	ErrTooManyEvents = errors.New("wire: batch does not fit in one packet")
	// ErrEventTooLarge: one event is larger than any packet's payload.
	ErrEventTooLarge = errors.New("wire: event larger than packet payload")
	// ErrPayloadLength: the bytes after the header differ from PayloadLen.
	ErrPayloadLength = errors.New("wire: payload length mismatch")
	// ErrBadFrame: the event frames do not match EventCount exactly.
	ErrBadFrame = errors.New("wire: malformed event frames")
	// ErrSealed: the payload is sealed; open it before reading events.
	ErrSealed = errors.New("wire: payload is sealed")
	// ErrBadMaxPayload: a builder limit outside (0, MaxPlainPayload].
	ErrBadMaxPayload = errors.New("wire: max payload out of range")
)

// The Builder and BuildPacket never split an event: one larger than a
// packet's payload is refused with ErrEventTooLarge, and the transport
// sends it as fragments instead (SplitEvent, FragmentHeader and
// Reassembler in fragment.go).

// Builder packs events into one packet's payload. It refuses, never
// truncates: an event that does not fit is rejected with ErrPacketFull and
// the caller starts a new packet.
//
// A Builder is not safe for concurrent use.
type Builder struct {
	hdr        Header
	buf        []byte // header space followed by the payload
	count      int
	maxPayload int
}

// NewBuilder starts a packet with header h (its PayloadLen and EventCount
// are set by Build) whose payload holds at most maxPayload bytes of event
// frames.
func NewBuilder(h Header, maxPayload int) (*Builder, error) {
	if maxPayload <= 0 || maxPayload > MaxPlainPayload {
		return nil, fmt.Errorf("%w: %d", ErrBadMaxPayload, maxPayload)
	}
	b := &Builder{maxPayload: maxPayload, buf: make([]byte, HeaderSize, HeaderSize+min(maxPayload, 4096))}
	b.Reset(h)
	return b, nil
}

// Reset starts a new packet with header h, reusing the buffer.
func (b *Builder) Reset(h Header) {
	b.hdr = h
	b.buf = b.buf[:HeaderSize]
	b.count = 0
}

// Len is the number of events added.
func (b *Builder) Len() int { return b.count }

// PayloadSize is the number of payload bytes so far.
func (b *Builder) PayloadSize() int { return len(b.buf) - HeaderSize }

// Fits reports whether an event of n bytes would be accepted now.
func (b *Builder) Fits(n int) bool {
	return b.count < MaxEventsPerPacket && n <= b.maxPayload-b.PayloadSize()-FrameLenSize
}

// Add appends one event. It returns ErrEventTooLarge if the event could
// never fit this builder's payload, ErrPacketFull if it does not fit what
// is left; in both cases the packet is unchanged.
func (b *Builder) Add(event []byte) error {
	if len(event) > b.maxPayload-FrameLenSize {
		return fmt.Errorf("%w: %d bytes, payload holds %d", ErrEventTooLarge, len(event), b.maxPayload-FrameLenSize)
	}
	if !b.Fits(len(event)) {
		return fmt.Errorf("%w: %d events, %d of %d bytes used", ErrPacketFull, b.count, b.PayloadSize(), b.maxPayload)
	}
	b.buf = binary.LittleEndian.AppendUint32(b.buf, uint32(len(event)))
	b.buf = append(b.buf, event...)
	b.count++
	return nil
}

// Header returns the header as Build will write it.
func (b *Builder) Header() Header {
	h := b.hdr
	h.PayloadLen = uint16(b.PayloadSize())
	h.EventCount = uint16(b.count)
	h.Flags &^= FlagEncrypted
	return h
}

// Build returns the unsealed packet: header then payload. The returned
// slice aliases the builder's buffer until the next Reset or Add.
func (b *Builder) Build() []byte {
	h := b.Header()
	h.Put((*[HeaderSize]byte)(b.buf[:HeaderSize]))
	return b.buf
}

// Seal returns the packet with its payload sealed by s, appended to dst.
func (b *Builder) Seal(dst []byte, s *Sealer) ([]byte, error) {
	h := b.Header()
	return s.Seal(dst, &h, b.buf[HeaderSize:])
}

// BuildPacket packs all of events into one unsealed packet appended to dst,
// or refuses the whole batch with ErrTooManyEvents (saying how many would
// have fitted) or ErrEventTooLarge. It never sends a prefix of the batch.
func BuildPacket(dst []byte, h Header, events [][]byte, maxPayload int) ([]byte, error) {
	if maxPayload <= 0 || maxPayload > MaxPlainPayload {
		return nil, fmt.Errorf("%w: %d", ErrBadMaxPayload, maxPayload)
	}
	size := 0
	for i, ev := range events {
		if len(ev) > maxPayload-FrameLenSize {
			return nil, fmt.Errorf("%w: event %d is %d bytes, payload holds %d", ErrEventTooLarge, i, len(ev), maxPayload-FrameLenSize)
		}
		size += FrameLenSize + len(ev)
		if size > maxPayload || i >= MaxEventsPerPacket {
			return nil, fmt.Errorf("%w: %d events given, the first %d fit in %d bytes", ErrTooManyEvents, len(events), i, maxPayload)
		}
	}
	h.Flags &^= FlagEncrypted
	h.PayloadLen = uint16(size)
	h.EventCount = uint16(len(events))
	dst = h.AppendTo(dst)
	for _, ev := range events {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(ev)))
		dst = append(dst, ev...)
	}
	return dst, nil
}

// Packet is a decoded packet. Payload aliases the input.
type Packet struct {
	Header  Header
	Payload []byte
}

// DecodePacket parses a whole packet: the header and exactly PayloadLen
// bytes after it (fewer or more is ErrPayloadLength).
func DecodePacket(b []byte) (Packet, error) {
	var p Packet
	if err := p.Decode(b); err != nil {
		return Packet{}, err
	}
	return p, nil
}

// Decode is DecodePacket into p, for callers that reuse a Packet. On error p
// is left in an unspecified state.
func (p *Packet) Decode(b []byte) error {
	if err := p.Header.Decode(b); err != nil {
		return err
	}
	if got := len(b) - HeaderSize; got != int(p.Header.PayloadLen) {
		return fmt.Errorf("%w: header says %d, have %d", ErrPayloadLength, p.Header.PayloadLen, got)
	}
	p.Payload = b[HeaderSize:]
	return nil
}

// Events splits an unsealed events payload into its events, appended to
// dst (which may be nil). The events alias the payload.
func (p Packet) Events(dst [][]byte) ([][]byte, error) {
	if p.Header.Flags&FlagEncrypted != 0 {
		return nil, ErrSealed
	}
	return DecodeEvents(dst, p.Payload, int(p.Header.EventCount))
}

// DecodeEvents splits payload into exactly count length-prefixed events,
// appended to dst. Fewer frames, a frame running past the end or bytes left
// over are ErrBadFrame.
func DecodeEvents(dst [][]byte, payload []byte, count int) ([][]byte, error) {
	if count*FrameLenSize > len(payload) {
		return nil, fmt.Errorf("%w: %d events cannot fit %d bytes", ErrBadFrame, count, len(payload))
	}
	rest := payload
	for i := 0; i < count; i++ {
		if len(rest) < FrameLenSize {
			return nil, fmt.Errorf("%w: event %d: no length prefix", ErrBadFrame, i)
		}
		n := binary.LittleEndian.Uint32(rest)
		rest = rest[FrameLenSize:]
		if uint64(n) > uint64(len(rest)) {
			return nil, fmt.Errorf("%w: event %d: length %d, %d bytes left", ErrBadFrame, i, n, len(rest))
		}
		dst = append(dst, rest[:n:n])
		rest = rest[n:]
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last event", ErrBadFrame, len(rest))
	}
	return dst, nil
}
