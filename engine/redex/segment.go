package redex

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
)

// Segment file layout (little-endian):
//
//	segment header, 16 bytes:  magic "RDXSEG01" | base seq u64
//	frame, 32-byte header + payload:
//	  payload crc u32 | header crc u32 | payload len u32 | flags u32 | seq u64 | ts i64 | payload
//
// The frame header is the index record of the entry plus a CRC-32C over
// the rest of the header (payload crc included), so a torn or flipped
// header is caught before its length field is trusted. Frame seqs are
// dense from the segment's base seq.

const (
	segMagic        = "RDXSEG01"
	segHeaderSize   = 16
	frameHeaderSize = 32
)

// errTorn reports the first byte of a segment that is not a valid frame.
var errTorn = errors.New("redex: torn or corrupt frame")

type decodedFrame struct {
	seq     uint64
	ts      int64
	flags   Flags
	crc     uint32
	payload []byte // aliases the input
}

func appendSegHeader(dst []byte, base uint64) []byte {
	dst = append(dst, segMagic...)
	return binary.LittleEndian.AppendUint64(dst, base)
}

// appendFrame encodes one frame onto dst; crc is the payload's CRC-32C.
func appendFrame(dst []byte, seq uint64, ts int64, flags Flags, crc uint32, p []byte) []byte {
	h := len(dst)
	dst = binary.LittleEndian.AppendUint32(dst, crc)
	dst = append(dst, 0, 0, 0, 0) // header crc, filled below
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(p)))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(flags))
	dst = binary.LittleEndian.AppendUint64(dst, seq)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(ts))
	binary.LittleEndian.PutUint32(dst[h+4:], headerCRC(dst[h:h+frameHeaderSize]))
	return append(dst, p...)
}

func headerCRC(hdr []byte) uint32 {
	c := crc32.Update(0, castagnoli, hdr[0:4])
	return crc32.Update(c, castagnoli, hdr[8:frameHeaderSize])
}

// decodeSegment parses a whole segment image. It returns the base seq, the
// frames that are intact and the length of the valid prefix. A non-nil
// error (wrapping errTorn) means bytes from valid on are not a valid frame;
// a segment whose header itself is bad yields valid == 0. It never panics
// on any input (see FuzzDecodeSegment).
func decodeSegment(b []byte, maxPayload int, heapOnly bool) (base uint64, frames []decodedFrame, valid int, err error) {
	if len(b) < segHeaderSize || string(b[:8]) != segMagic {
		return 0, nil, 0, fmt.Errorf("segment header: %w", errTorn)
	}
	base = binary.LittleEndian.Uint64(b[8:16])
	off := segHeaderSize
	for off < len(b) {
		f, n, ferr := decodeFrame(b[off:], base+uint64(len(frames)), maxPayload, heapOnly)
		if ferr != nil {
			return base, frames, off, fmt.Errorf("frame at offset %d: %w", off, ferr)
		}
		frames = append(frames, f)
		off += n
	}
	return base, frames, off, nil
}

func decodeFrame(b []byte, wantSeq uint64, maxPayload int, heapOnly bool) (decodedFrame, int, error) {
	if len(b) < frameHeaderSize {
		return decodedFrame{}, 0, fmt.Errorf("short header (%d bytes): %w", len(b), errTorn)
	}
	if headerCRC(b[:frameHeaderSize]) != binary.LittleEndian.Uint32(b[4:8]) {
		return decodedFrame{}, 0, fmt.Errorf("header checksum mismatch: %w", errTorn)
	}
	f := decodedFrame{
		crc:   binary.LittleEndian.Uint32(b[0:4]),
		flags: Flags(binary.LittleEndian.Uint32(b[12:16])),
		seq:   binary.LittleEndian.Uint64(b[16:24]),
		ts:    int64(binary.LittleEndian.Uint64(b[24:32])),
	}
	n := binary.LittleEndian.Uint32(b[8:12])
	switch {
	case f.seq == math.MaxUint64:
		return decodedFrame{}, 0, fmt.Errorf("seq %d is never assigned: %w", f.seq, errTorn)
	case f.seq != wantSeq:
		return decodedFrame{}, 0, fmt.Errorf("seq %d, want %d: %w", f.seq, wantSeq, errTorn)
	case uint64(n) > uint64(maxPayload):
		return decodedFrame{}, 0, fmt.Errorf("payload length %d over maximum: %w", n, errTorn)
	case f.flags&FlagInline != 0 && (n != 8 || heapOnly):
		return decodedFrame{}, 0, fmt.Errorf("invalid inline frame: %w", errTorn)
	case uint64(len(b)-frameHeaderSize) < uint64(n):
		return decodedFrame{}, 0, fmt.Errorf("short payload: %w", errTorn)
	}
	f.payload = b[frameHeaderSize : frameHeaderSize+int(n) : frameHeaderSize+int(n)]
	if crc32.Checksum(f.payload, castagnoli) != f.crc {
		return decodedFrame{}, 0, fmt.Errorf("payload checksum mismatch: %w", errTorn)
	}
	return f, frameHeaderSize + int(n), nil
}

// intactFrameAfter looks for an intact frame at or after offset off of a
// segment image whose frames up to off were valid and whose next seq
// would have been wantSeq: a frame whose header and payload checksums hold
// and whose seq could follow the damage (at least wantSeq, and no further
// on than the bytes left could hold). It returns that frame's offset and
// seq.
//
// Recovery uses it to tell a torn write from corruption: a torn write
// leaves a bad suffix with nothing intact after it; bad bytes followed by an intact frame mean the segment was
// damaged after it was written, and cutting there would drop entries that
// may have been fsynced. Candidate offsets are filtered on the seq field
// before any checksum is computed, so scanning a long torn payload is cheap.
func intactFrameAfter(b []byte, off int, wantSeq uint64, maxPayload int, heapOnly bool) (at int, seq uint64, ok bool) {
	if off < 0 || off >= len(b) {
		return 0, 0, false
	}
	span := uint64(len(b)-off) / frameHeaderSize
	for o := off; o+frameHeaderSize <= len(b); o++ {
		s := binary.LittleEndian.Uint64(b[o+16 : o+24])
		if s < wantSeq || s-wantSeq > span {
			continue
		}
		if _, _, err := decodeFrame(b[o:], s, maxPayload, heapOnly); err == nil {
			return o, s, true
		}
	}
	return 0, 0, false
}
