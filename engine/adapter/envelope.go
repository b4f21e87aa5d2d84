package adapter

import (
	"encoding/binary"
)

// envelopeVersion is the first byte of every envelope; a store entry with
// any other first byte was not written by us (or is corrupt).
const envelopeVersion = 1

// envelopeHeader is version (1) + shard (2) + timestamp (8).
const envelopeHeader = 1 + 2 + 8

// AppendEnvelope appends the wire form used by the external stores
// (JetStream message data, the Redis "e" field): version, shard id,
// timestamp, payload.
func AppendEnvelope(dst []byte, shard uint16, ts uint64, payload []byte) []byte {
	dst = append(dst, envelopeVersion)
	dst = binary.BigEndian.AppendUint16(dst, shard)
	dst = binary.BigEndian.AppendUint64(dst, ts)
	return append(dst, payload...)
}

// DecodeEnvelope parses an envelope read from a store for shard want. A
// short buffer, an unknown version or an entry that names another shard is
// a fatal error: re-reading it will not fix it, and returning an empty
// payload instead would silently lose the event. The returned payload
// aliases b.
func DecodeEnvelope(b []byte, want uint16) (ts uint64, payload []byte, err error) {
	if len(b) < envelopeHeader {
		return 0, nil, Fatal("malformed envelope: %d bytes, need at least %d", len(b), envelopeHeader)
	}
	if b[0] != envelopeVersion {
		return 0, nil, Fatal("malformed envelope: version %d, want %d", b[0], envelopeVersion)
	}
	if got := binary.BigEndian.Uint16(b[1:3]); got != want {
		return 0, nil, Fatal("malformed envelope: shard %d stored in shard %d's stream", got, want)
	}
	return binary.BigEndian.Uint64(b[3:11]), b[envelopeHeader:], nil
}

// CheckShardID converts an externally supplied shard id (parsed from a
// stream name, a subject or a config file) to uint16, rejecting values above
// MaxShardID as fatal instead of truncating them onto another shard.
func CheckShardID(id uint64) (uint16, error) {
	if id > MaxShardID {
		return 0, Fatal("shard id %d out of range (max %d)", id, MaxShardID)
	}
	return uint16(id), nil
}
