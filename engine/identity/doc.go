// Package identity holds what authenticates the operator to nodes and nodes
// to each other: ed25519 key pairs, the origin hash derived from a public
// key, and signed permission tokens.
//
// Invariants:
//
//   - A KeyPair's public key is always the one derived from its private key;
//     loading a Secret whose public half does not match the private half is
//     an error, never a silent choice of one of them.
//   - The origin hash is a pure function of the public key (SHA-256, first
//     eight bytes, little endian). It names a node on the wire; it is a
//     routing hint and proves nothing by itself (packets that need origin
//     authentication rely on the session AEAD, see engine/wire).
//   - A token is valid only if every link of its chain carries a good
//     signature by the previous link's subject (the root by a trusted key),
//     each link narrows its parent (scope subset, same or narrower
//     channel/shard binding, time window inside the parent's, delegation
//     depth strictly decreasing), and the verifier's clock lies inside every
//     link's window widened by the clock-skew allowance.
//   - Each signature covers a domain-separation tag, the link's own fields
//     and the parent's signature, so a link cannot be re-attached to another
//     parent or replayed as a different kind of signed object.
//   - TryIssue never mints a born-expired token: a zero TTL is ErrZeroTTL and
//     a negative one ErrNegativeTTL. Issue is the convenience form that
//     clamps a zero TTL to one second (the Net v0.9 behaviour) and still
//     rejects a negative one.
//
// Tokens are bearer credentials: the subject key names who the grant is
// for, but presenting the header proves only possession of the header. Keep
// TTLs short and carry tokens only over authenticated, encrypted channels
// (TLS for the admin API, sealed packets for replication). A caller that
// also knows the peer's key (mTLS, a session handshake) should compare it
// with Token.Subject.
//
// A Verifier's trusted keys can be replaced while it is in use
// (SetTrusted), and Seal/Open hand a private key to holders of another
// one: together they let the operator rotate keys on running nodes
// (trust old and new, switch, drop the old one) without restarting them.
//
// Tokens serialize to a compact binary form and, for HTTP headers, to
// unpadded base64url (EncodeHeader / ParseHeader); the header value carries
// the whole delegation chain, root first.
package identity
