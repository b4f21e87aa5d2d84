// Package wire frames events between nodes (replication) and from clients
// (the binary data API): a fixed 64-byte header, a payload of
// length-prefixed events, fragmentation of events larger than a packet,
// optional ChaCha20-Poly1305 sealing of the payload with per-connection
// session keys, channel control messages, stream flow-control windows and
// a per-peer anti-replay window.
//
// Header layout (little endian, offsets in bytes):
//
//	 0  magic "MS" (0x534d)      2  version       3  flags
//	 4  priority                 5  hop TTL       6  hop count   7  fragment flags
//	 8  subprotocol id (2)      10  channel hash (2)
//	12  nonce (12)
//	24  session id (8)          32  stream id (8) 40  sequence (8)
//	48  origin hash (4)         52  subnet id (4)
//	56  fragment id (2)         58  fragment offset (2)
//	60  payload length (2)      62  event count (2)
//
// An events payload is EventCount frames of a 4-byte little-endian length
// followed by that many bytes, and nothing after the last frame. An event
// larger than one payload travels as fragments: consecutive packets of one
// frame each, marked by the fragment flags, id and index (fragment.go);
// a Reassembler joins them within a per-event and a total memory bound.
//
// Invariants:
//
//   - DecodeHeader accepts exactly the headers Header.Put writes: wrong
//     magic or version, unknown flag bits, a hop count above the hop TTL or
//     an event count that cannot fit the payload length are errors, so
//     re-encoding a decoded header reproduces its bytes (the AEAD relies on
//     this to rebuild the associated data).
//   - No decoder in this package panics or allocates in proportion to a
//     length field before checking that field against the bytes present.
//   - The packet builder never truncates: an event that does not fit is
//     refused with ErrPacketFull and BuildPacket refuses a batch that does
//     not fit whole with ErrTooManyEvents.
//   - DecodePacket requires the payload length to match the bytes after
//     the header exactly; Events requires exactly EventCount frames and no
//     trailing bytes.
//   - Control-message decoders reject trailing bytes (Net v0.9: "channel
//     decoder accepts trailing bytes on UNSUBSCRIBE/ACK").
//   - A sealed payload authenticates the whole header except the hop count
//     (forwarders increment it); a Sealer never reuses a nonce for its key
//     and refuses to seal once its counter is exhausted.
//   - A Reassembler never returns an event above its MaxEvent (an
//     *OversizeError, unwrapping to ErrEventOversize, instead), never holds
//     more than its in-flight bound, and accepts a stream's fragments only
//     in index order starting at 0.
//   - A session (session.go) derives two keys per connection (X25519, HKDF
//     over the handshake transcript) and a SessionConn seals every packet
//     it writes and opens every packet it reads: a packet that fails to
//     open, is unsealed, carries another session's id or repeats a sequence
//     number ends the reads with that error. A client given trusted server
//     keys refuses a handshake not signed by one of them.
//   - A StreamWindow's consumed total never exceeds what was sent and never
//     moves backwards.
//   - A ReplayWindow accepts each sequence number at most once and refuses
//     numbers older than the window; a forward jump of a whole window or
//     more clears it, and that is logged as a structured warning, never
//     done silently.
//
// The origin hash on the wire is the low 32 bits of identity.OriginHash: a
// routing hint, not proof of origin. Authenticity comes from the session
// AEAD; a peer that holds the session key can put any origin hash in a
// header it seals (the Net v0.9 "OriginStamp has no per-packet binding"
// threat model).
package wire
