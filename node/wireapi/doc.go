// Package wireapi serves a node's data API (ingest and poll) over the binary
// wire codec (engine/wire) on the node's wire port, and is its client
// (Conn). It is the fast path next to the HTTP/JSON data API (package
// dataapi): same backend, same all-or-nothing ingest, same typed refusals.
//
// # Protocol
//
// The node's wire port peeks at a connection's first 64-byte header: a
// header with subprotocol Subprotocol (0x0044) goes to Server.ServeConn,
// replication's (0x0052) to the replication server (a session hello, see
// Sealing below, carries the same subprotocol). Every packet is a wire
// packet of this subprotocol (as the protocol reads it: sealing, when
// used, sits below); its Sequence numbers the
// sender's packets on the connection 1, 2, 3, … (a gap or repeat is a
// protocol violation), its StreamID is the request id the client chose
// (non-zero, unique among its requests in flight), and FlagFin marks a
// message's last packet. A message is one or more consecutive packets of
// one stream: its first frame says what it is, the frames after it (in the
// same or following packets) are events. Integers are little endian;
// strings are a u16 length and UTF-8 bytes.
//
//	ingest     (client) 1 ; then one frame per event: keyLen u16 | key | payload
//	poll       (client) 2 | limit u32 | cursor
//	ingest ok  (node)   0x81 | n u32 | shard u16 × n        (one ack per event, in order)
//	poll ok    (node)   0x82 | flags u8 (1 hasMore, 2 truncatedAtPerShardCap) | cursor
//	                      | n u16 | stalled shard u16 × n ; then one frame per
//	                      event: shard u16 | seq u64 | time i64 (Unix ns) | payload
//	refused    (node)   0x8f | code u8 | flags u8 (1 has shard, 2 rate limited) | shard u16
//	                      | error | owner | ownerData | rule | n u16 | rule × n
//
// An event frame larger than one packet (MaxFrame) travels as fragments
// (engine/wire fragment.go): after the packets before it, consecutive
// packets of the same stream of one frame each, carrying a chunk of the
// event frame, with the header's fragment flags, id and index set; the
// next frame starts a new packet. Each side reassembles within a bound:
// an event's key plus payload is at most MaxEventSize (the sender refuses
// a larger one before sending anything, with an error matching both
// ErrFrameTooLarge and wire.ErrEventOversize, a *wire.OversizeError); a
// peer that sends more, sends fragments out of order or ends a message
// inside a fragmented event breaks the protocol.
//
// Refusal codes are dataapi's: 1 bad_request, 2 not_owner (with the
// shard, the owner's name and its data address), 3 shard_moving,
// 4 lease_expired, 5 no_topology, 6 backpressure, 7 behind_retention,
// 8 rule_rejected (with the first failing rule, all of them and whether it
// is a rate limit), 9 rejected, 10 internal. The client sees them as a
// *RefusedError that unwraps to the node's own error values (package
// refusal).
//
// Clients pipeline: any number of requests may be in flight on one
// connection, and the node answers each as it completes, so answers can
// come in another order than the requests; the stream id matches them.
// Each side writes a message's packets consecutively, never interleaved
// with another message's.
//
// # Invariants (pinned by tests)
//
//   - Decoders reject malformed input with errors wrapping ErrProtocol and
//     never panic (a fuzz target feeds arbitrary bytes to the server's and
//     the client's packet readers); the connection is then closed.
//   - A node holds bounded memory per connection: at most
//     ServerOptions.ConnBuffer bytes of request payload and
//     ServerOptions.MaxInFlight requests being served; past either it stops
//     reading the connection (TCP pushes back on the client). One request
//     is at most MaxRequestBytes and MaxBatch events.
//   - Ingest is all or nothing as in the backend: an ingest ok carries
//     exactly one ack per event; a refusal as not_owner or shard_moving
//     (a fence or cutover) means nothing was appended. A node may have
//     appended events it then refuses only when the outcome is unknown
//     to it too (lease_expired during the append or the Standby wait, a
//     Standby wait that failed, backpressure part way through a batch;
//     see node.Ingest), and the SDK resends them as after a broken
//     connection.
//   - A client's answer for one request never reaches another caller.
//
// Authentication is set per server (ServerOptions.Verifier; none by
// default, as for the HTTP data API's handler). The node runtime sets it
// unless its configuration says dataAuth mode None (package node/config):
// tokens rooted in the operator key, directly or delegated once by the
// cluster's data key (identity.DataCredentials). With it, a connection
// first sends
//
//	auth       (client) 3 | tokenLen u16 | token (identity binary form, ≤ 4096 bytes)
//	auth ok    (node)   0x83
//
// and every later ingest needs identity.ScopeIngest and every poll
// identity.ScopeConsume, until the token's NotAfter; otherwise the request is
// refused with code rejected (a *RefusedError unwrapping to
// dataapi.ErrForbidden; the connection stays, and may authenticate again
// with a fresh token, which the SDK does before its token expires). The
// token is checked once, when presented.
//
// # Sealing
//
// A connection may start with a wire session handshake (engine/wire
// session.go; DialSealed): from then on every packet in both directions is
// sealed with the session's keys, and a tampered, replayed or foreign
// packet ends the connection. The server signs the handshake with
// ServerOptions.SessionKey (the node's cluster key); a client given trusted
// keys refuses any other signer. ServerOptions.RequireSealed refuses
// connections without a handshake (the node runtime sets it). Tokens then
// travel sealed; without sealing they are bearer credentials in the clear.
package wireapi
