package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
)

const (
	// HeaderSize is the size of an encoded header.
	HeaderSize = 64
	// Magic opens every header ("MS" read as a little-endian uint16).
	Magic uint16 = 0x534d
	// Version is the header version this package writes and accepts.
	Version uint8 = 1
	// NonceSize is the size of the header's AEAD nonce.
	NonceSize = 12
	// FrameLenSize is the size of each event's length prefix.
	FrameLenSize = 4
)

// Flags are per-packet bits.
type Flags uint8

const (
	// FlagEncrypted: the payload is sealed (ciphertext followed by the tag).
	FlagEncrypted Flags = 1 << iota
	// FlagReliable: the sender wants an acknowledgement.
	FlagReliable
	// FlagFin: the last packet of a stream.
	FlagFin
	// FlagHeartbeat: a keepalive with no events.
	FlagHeartbeat

	flagsKnown = FlagEncrypted | FlagReliable | FlagFin | FlagHeartbeat
)

// Subprotocol ids carried in the header.
const (
	SubprotocolEvents  uint16 = 0 // payload is event frames
	SubprotocolControl uint16 = 1 // payload is one control message
)

// Header errors.
var (
	ErrShortHeader        = errors.New("wire: header shorter than 64 bytes")
	ErrBadMagic           = errors.New("wire: bad header magic")
	ErrUnsupportedVersion = errors.New("wire: unsupported header version")
	ErrUnknownFlags       = errors.New("wire: unknown header flags")
	ErrHopLimit           = errors.New("wire: hop count above hop TTL")
	ErrEventCount         = errors.New("wire: event count does not fit payload length")
)

// Header is the fixed 64-byte packet header. Magic and version are implied.
type Header struct {
	Flags          Flags
	Priority       uint8
	HopTTL         uint8
	HopCount       uint8
	FragmentFlags  uint8
	Subprotocol    uint16
	ChannelHash    uint16
	Nonce          [NonceSize]byte
	SessionID      uint64
	StreamID       uint64
	Sequence       uint64
	OriginHash     uint32
	SubnetID       uint32
	FragmentID     uint16
	FragmentOffset uint16
	// PayloadLen is the number of bytes after the header (ciphertext and
	// tag when FlagEncrypted is set).
	PayloadLen uint16
	EventCount uint16
}

// Put writes h into b. Neighbouring small fields are packed into one
// 64-bit little-endian store each, which is what keeps encoding to a handful
// of instructions.
func (h *Header) Put(b *[HeaderSize]byte) {
	le := binary.LittleEndian
	le.PutUint64(b[0:], uint64(Magic)|uint64(Version)<<16|uint64(h.Flags)<<24|
		uint64(h.Priority)<<32|uint64(h.HopTTL)<<40|uint64(h.HopCount)<<48|uint64(h.FragmentFlags)<<56)
	le.PutUint32(b[8:], uint32(h.Subprotocol)|uint32(h.ChannelHash)<<16)
	copy(b[12:24], h.Nonce[:])
	le.PutUint64(b[24:], h.SessionID)
	le.PutUint64(b[32:], h.StreamID)
	le.PutUint64(b[40:], h.Sequence)
	le.PutUint64(b[48:], uint64(h.OriginHash)|uint64(h.SubnetID)<<32)
	le.PutUint64(b[56:], uint64(h.FragmentID)|uint64(h.FragmentOffset)<<16|
		uint64(h.PayloadLen)<<32|uint64(h.EventCount)<<48)
}

// AppendTo appends the encoded header to dst.
func (h *Header) AppendTo(dst []byte) []byte {
	var b [HeaderSize]byte
	h.Put(&b)
	return append(dst, b[:]...)
}

// hopCountOffset is excluded from the AEAD associated data.
const hopCountOffset = 6

// DecodeHeader parses the first HeaderSize bytes of b (bytes after them are
// the caller's business; DecodePacket checks them).
func DecodeHeader(b []byte) (h Header, err error) {
	if err = h.Decode(b); err != nil {
		h = Header{}
	}
	return h, err
}

// Decode is DecodeHeader into h, for callers that reuse a Header. On error
// h is left in an unspecified state.
func (h *Header) Decode(b []byte) error {
	if len(b) < HeaderSize {
		return fmt.Errorf("%w: %d bytes", ErrShortHeader, len(b))
	}
	b = b[:HeaderSize]
	le := binary.LittleEndian
	w0 := le.Uint64(b[0:])
	if m := uint16(w0); m != Magic {
		return fmt.Errorf("%w: 0x%04x", ErrBadMagic, m)
	}
	if v := uint8(w0 >> 16); v != Version {
		return fmt.Errorf("%w: %d", ErrUnsupportedVersion, v)
	}
	h.Flags = Flags(w0 >> 24)
	h.Priority = uint8(w0 >> 32)
	h.HopTTL = uint8(w0 >> 40)
	h.HopCount = uint8(w0 >> 48)
	h.FragmentFlags = uint8(w0 >> 56)
	w1 := le.Uint32(b[8:])
	h.Subprotocol = uint16(w1)
	h.ChannelHash = uint16(w1 >> 16)
	h.Nonce = [NonceSize]byte(b[12:24])
	h.SessionID = le.Uint64(b[24:])
	h.StreamID = le.Uint64(b[32:])
	h.Sequence = le.Uint64(b[40:])
	w6 := le.Uint64(b[48:])
	h.OriginHash = uint32(w6)
	h.SubnetID = uint32(w6 >> 32)
	w7 := le.Uint64(b[56:])
	h.FragmentID = uint16(w7)
	h.FragmentOffset = uint16(w7 >> 16)
	h.PayloadLen = uint16(w7 >> 32)
	h.EventCount = uint16(w7 >> 48)
	// One combined test keeps the valid path branch-light; the error
	// path works out which rule failed.
	if h.Flags&^flagsKnown != 0 || h.HopCount > h.HopTTL || int(h.EventCount)*FrameLenSize > h.plainLen() {
		return h.invalid()
	}
	return nil
}

// invalid names the first rule a decoded header breaks.
func (h *Header) invalid() error {
	if h.Flags&^flagsKnown != 0 {
		return fmt.Errorf("%w: 0x%02x", ErrUnknownFlags, uint8(h.Flags))
	}
	if h.HopCount > h.HopTTL {
		return fmt.Errorf("%w: %d > %d", ErrHopLimit, h.HopCount, h.HopTTL)
	}
	return h.checkEventCount()
}

// plainLen is the payload length once any AEAD tag is removed, or -1 when a
// sealed payload is too short to hold a tag.
func (h *Header) plainLen() int {
	n := int(h.PayloadLen)
	if h.Flags&FlagEncrypted != 0 {
		n -= TagSize
	}
	return n
}

func (h *Header) checkEventCount() error {
	n := h.plainLen()
	if n < 0 {
		return fmt.Errorf("%w: sealed payload of %d bytes has no room for the tag", ErrEventCount, h.PayloadLen)
	}
	if int(h.EventCount)*FrameLenSize > n {
		return fmt.Errorf("%w: %d events in %d bytes", ErrEventCount, h.EventCount, n)
	}
	return nil
}

// ChannelHash folds a channel name to the header's 16-bit channel hash. It
// is for fast filtering only; names collide and the channel name itself is
// authoritative wherever it is carried.
func ChannelHash(name string) uint16 {
	f := fnv.New32a()
	_, _ = f.Write([]byte(name))
	s := f.Sum32()
	return uint16(s>>16) ^ uint16(s)
}

// OriginHash32 is the wire form of a 64-bit origin hash: its low 32 bits.
func OriginHash32(h uint64) uint32 { return uint32(h) }
