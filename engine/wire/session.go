package wire

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Sessions: a handshake that gives a connection two keys (one per
// direction) and a SessionConn that seals every packet written and opens
// every packet read, so the protocols above (replication, the binary data
// API) keep reading and writing plain packets.
//
// Handshake (both messages are packets of the connection's subprotocol with
// Sequence 0 and one frame; numbered packets start at 1, so a reader tells
// a handshake from the first protocol packet by its header):
//
//	hello   (client) 'H' | version u8 | X25519 public key (32) | nonce (16)
//	welcome (server) 'W' | version u8 | X25519 public key (32) | nonce (16)
//	                 | session id u64 | signer ed25519 public key (32, zero
//	                 if unsigned) | signature (64, zero if unsigned)
//
// transcript = SHA-256(sessionDomain | subprotocol u16 | hello | welcome up
// to and including the signer key). The server signs
// signDomain | transcript with its static key (a node's cluster key); a
// client configured with trusted keys refuses a welcome not signed by one of
// them, which defeats a man in the middle; without trusted keys the session
// protects against passive observers only. Keys:
// HKDF-SHA256(X25519 shared secret, salt = transcript, info) → client→server
// key | server→client key.
//
// Sealed packets: the payload is sealed with the direction's key (Sealer,
// ChaCha20-Poly1305), authenticating the whole header, so a flipped byte
// anywhere is refused (ErrOpen); each direction's Sequence must grow
// (ReplayWindow), so a replayed packet is refused (ErrReplayDuplicate or
// ErrReplayTooOld), and a packet of another session fails to open. Any
// failure breaks the connection: SessionConn.Read returns the error.

const (
	sessionVersion = 1
	helloKind      = 'H'
	welcomeKind    = 'W'
	helloSize      = 1 + 1 + 32 + 16
	welcomeSize    = helloSize + 8 + ed25519.PublicKeySize + ed25519.SignatureSize
	// SessionHandshakeTimeout bounds a handshake unless the caller set a
	// deadline.
	SessionHandshakeTimeout = 10 * time.Second
)

var (
	sessionDomain = []byte("mesh-operator/wire-session/v1\x00")
	signDomain    = []byte("mesh-operator/wire-session/v1/server\x00")
	keyInfo       = "mesh-operator/wire-session/v1 keys"
)

// Session errors.
var (
	// ErrHandshake: the session handshake failed (malformed, wrong
	// version, untrusted or bad server signature).
	ErrHandshake = errors.New("wire: session handshake failed")
	// ErrUnsealed: a session connection received a packet that is not
	// sealed.
	ErrUnsealed = errors.New("wire: unsealed packet on a sealed session")
)

// IsSessionHello reports whether b starts with the header of a session
// hello: a valid header with Sequence 0 and one frame.
func IsSessionHello(b []byte) bool {
	h, err := DecodeHeader(b)
	return err == nil && h.Sequence == 0 && h.EventCount == 1 && h.Flags == 0 && h.PayloadLen == FrameLenSize+helloSize
}

// ClientSession configures the client side of a handshake.
type ClientSession struct {
	// Subprotocol is the protocol the connection carries (the server's
	// wire port routes on it).
	Subprotocol uint16
	// TrustedServerKeys, if not empty, are the keys a server must sign its
	// welcome with; otherwise an unsigned (or any signed) welcome is
	// accepted.
	TrustedServerKeys []ed25519.PublicKey
	// AllowUnsigned accepts an unsigned welcome even with
	// TrustedServerKeys (a signed one must still verify): for peers that
	// may run without a signing key. It gives up protection against a man
	// in the middle, who can strip the signature.
	AllowUnsigned bool
}

// ServerSession configures the server side of a handshake.
type ServerSession struct {
	// Signer, if set, signs the welcome (its public key travels in it).
	Signer ed25519.PrivateKey
	// Sign and Public, if set (instead of Signer), sign the welcome with a
	// key held elsewhere (identity.KeyPair.Sign).
	Sign   func(msg []byte) []byte
	Public ed25519.PublicKey
	// Timeout bounds the wait for the first packet and the handshake.
	// Default SessionHandshakeTimeout.
	Timeout time.Duration
}

func (ss ServerSession) timeout() time.Duration {
	if ss.Timeout > 0 {
		return ss.Timeout
	}
	return SessionHandshakeTimeout
}

func (ss ServerSession) signer() (ed25519.PublicKey, func([]byte) []byte) {
	switch {
	case ss.Signer != nil:
		return ss.Signer.Public().(ed25519.PublicKey), func(m []byte) []byte { return ed25519.Sign(ss.Signer, m) }
	case ss.Sign != nil && len(ss.Public) == ed25519.PublicKeySize:
		return ss.Public, ss.Sign
	}
	return nil, nil
}

// AcceptOrPlain peeks at conn's first packet header: a session hello is
// accepted (Accept) and the sealed connection returned; any other packet is
// refused with ErrUnsealed when require is set, and otherwise handed back
// in a connection that replays the header, for the protocol to read
// unsealed.
func (ss ServerSession) AcceptOrPlain(conn net.Conn, require bool) (net.Conn, error) {
	var hb [HeaderSize]byte
	_ = conn.SetReadDeadline(time.Now().Add(ss.timeout()))
	_, err := io.ReadFull(conn, hb[:])
	_ = conn.SetReadDeadline(time.Time{})
	if err != nil {
		return nil, err
	}
	replay := &replayConn{Conn: conn, head: hb[:]}
	if IsSessionHello(hb[:]) {
		sc, err := ss.Accept(replay)
		if err != nil {
			return nil, err
		}
		return sc, nil
	}
	if require {
		return nil, fmt.Errorf("%w: this port requires a session handshake first", ErrUnsealed)
	}
	return replay, nil
}

// replayConn returns head before reading on.
type replayConn struct {
	net.Conn
	head []byte
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(b, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// Handshake runs the client handshake on conn and returns the sealed
// connection. On error the caller closes conn.
func (cs ClientSession) Handshake(conn net.Conn) (*SessionConn, error) {
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("wire: session key: %w", err)
	}
	hello := make([]byte, 0, helloSize)
	hello = append(hello, helloKind, sessionVersion)
	hello = append(hello, priv.PublicKey().Bytes()...)
	hello = appendRandom(hello, 16)
	restore := handshakeDeadline(conn, SessionHandshakeTimeout)
	defer restore()
	if err := writeHandshake(conn, cs.Subprotocol, hello); err != nil {
		return nil, err
	}
	welcome, err := readHandshake(conn, cs.Subprotocol, welcomeSize)
	if err != nil {
		return nil, err
	}
	if welcome[0] != welcomeKind || welcome[1] != sessionVersion {
		return nil, fmt.Errorf("%w: not a welcome (kind %#x, version %d)", ErrHandshake, welcome[0], welcome[1])
	}
	signed := welcome[:helloSize+8+ed25519.PublicKeySize]
	signer := ed25519.PublicKey(welcome[helloSize+8 : helloSize+8+ed25519.PublicKeySize])
	sig := welcome[helloSize+8+ed25519.PublicKeySize:]
	tr := transcript(cs.Subprotocol, hello, signed)
	unsigned := signer.Equal(make(ed25519.PublicKey, ed25519.PublicKeySize))
	if len(cs.TrustedServerKeys) > 0 && !(unsigned && cs.AllowUnsigned) {
		trusted := false
		for _, k := range cs.TrustedServerKeys {
			trusted = trusted || k.Equal(signer)
		}
		if !trusted {
			return nil, fmt.Errorf("%w: the server's key is not trusted", ErrHandshake)
		}
		if !ed25519.Verify(signer, append(append([]byte{}, signDomain...), tr...), sig) {
			return nil, fmt.Errorf("%w: bad server signature", ErrHandshake)
		}
	}
	peer, err := ecdh.X25519().NewPublicKey(welcome[2:34])
	if err != nil {
		return nil, fmt.Errorf("%w: server key: %v", ErrHandshake, err)
	}
	shared, err := priv.ECDH(peer)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	c2s, s2c, err := sessionKeys(shared, tr)
	if err != nil {
		return nil, err
	}
	return newSessionConn(conn, c2s, s2c, binary.LittleEndian.Uint64(welcome[helloSize:]))
}

// Accept runs the server handshake on conn, whose next bytes are the
// client's hello (IsSessionHello), and returns the sealed connection. On
// error the caller closes conn.
func (ss ServerSession) Accept(conn net.Conn) (*SessionConn, error) {
	restore := handshakeDeadline(conn, ss.timeout())
	defer restore()
	var hb [HeaderSize]byte
	if _, err := io.ReadFull(conn, hb[:]); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	h, err := DecodeHeader(hb[:])
	if err != nil || !IsSessionHello(hb[:]) {
		return nil, fmt.Errorf("%w: not a hello", ErrHandshake)
	}
	hello, err := readFrame(conn, helloSize)
	if err != nil {
		return nil, err
	}
	if hello[0] != helloKind || hello[1] != sessionVersion {
		return nil, fmt.Errorf("%w: not a hello (kind %#x, version %d)", ErrHandshake, hello[0], hello[1])
	}
	peer, err := ecdh.X25519().NewPublicKey(hello[2:34])
	if err != nil {
		return nil, fmt.Errorf("%w: client key: %v", ErrHandshake, err)
	}
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("wire: session key: %w", err)
	}
	welcome := make([]byte, 0, welcomeSize)
	welcome = append(welcome, welcomeKind, sessionVersion)
	welcome = append(welcome, priv.PublicKey().Bytes()...)
	welcome = appendRandom(welcome, 16+8) // nonce and session id
	pub, sign := ss.signer()
	if sign != nil {
		welcome = append(welcome, pub...)
	} else {
		welcome = append(welcome, make([]byte, ed25519.PublicKeySize)...)
	}
	tr := transcript(h.Subprotocol, hello, welcome)
	if sign != nil {
		welcome = append(welcome, sign(append(append([]byte{}, signDomain...), tr...))...)
	} else {
		welcome = append(welcome, make([]byte, ed25519.SignatureSize)...)
	}
	shared, err := priv.ECDH(peer)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	c2s, s2c, err := sessionKeys(shared, tr)
	if err != nil {
		return nil, err
	}
	if err := writeHandshake(conn, h.Subprotocol, welcome); err != nil {
		return nil, err
	}
	return newSessionConn(conn, s2c, c2s, binary.LittleEndian.Uint64(welcome[helloSize:]))
}

func appendRandom(b []byte, n int) []byte {
	r := make([]byte, n)
	_, _ = rand.Read(r) // crypto/rand.Read never fails on supported platforms
	return append(b, r...)
}

func handshakeDeadline(conn net.Conn, d time.Duration) (restore func()) {
	_ = conn.SetDeadline(time.Now().Add(d))
	return func() { _ = conn.SetDeadline(time.Time{}) }
}

func transcript(sub uint16, hello, welcome []byte) []byte {
	h := sha256.New()
	h.Write(sessionDomain)
	_ = binary.Write(h, binary.LittleEndian, sub)
	h.Write(hello)
	h.Write(welcome)
	return h.Sum(nil)
}

func sessionKeys(shared, tr []byte) (c2s, s2c []byte, err error) {
	okm, err := hkdf.Key(sha256.New, shared, tr, keyInfo, 2*KeySize)
	if err != nil {
		return nil, nil, fmt.Errorf("wire: session keys: %w", err)
	}
	return okm[:KeySize], okm[KeySize:], nil
}

func writeHandshake(conn net.Conn, sub uint16, msg []byte) error {
	pkt, err := BuildPacket(nil, Header{Subprotocol: sub}, [][]byte{msg}, MaxPlainPayload)
	if err != nil {
		return err
	}
	if _, err := conn.Write(pkt); err != nil {
		return fmt.Errorf("%w: write: %w", ErrHandshake, err)
	}
	return nil
}

func readHandshake(conn net.Conn, sub uint16, size int) ([]byte, error) {
	var hb [HeaderSize]byte
	if _, err := io.ReadFull(conn, hb[:]); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	h, err := DecodeHeader(hb[:])
	if err != nil || h.Subprotocol != sub || h.Sequence != 0 || h.EventCount != 1 || h.Flags != 0 || int(h.PayloadLen) != FrameLenSize+size {
		return nil, fmt.Errorf("%w: unexpected handshake packet", ErrHandshake)
	}
	return readFrame(conn, size)
}

func readFrame(conn net.Conn, size int) ([]byte, error) {
	b := make([]byte, FrameLenSize+size)
	if _, err := io.ReadFull(conn, b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	if int(binary.LittleEndian.Uint32(b)) != size {
		return nil, fmt.Errorf("%w: frame length", ErrHandshake)
	}
	return b[FrameLenSize:], nil
}

// SessionConn is a connection whose packets are sealed: Write takes plain
// packets (whole or in pieces) and sends each sealed once it is complete;
// Read returns the peer's packets opened, with FlagEncrypted cleared and
// PayloadLen the plaintext's, exactly as an unsealed connection would carry
// them. Every packet written must have a payload of at most
// MaxPlainPayload. Reads and writes may run concurrently with each other
// (one reader, one writer at a time).
type SessionConn struct {
	net.Conn
	id uint64

	wmu    sync.Mutex
	sealer *Sealer
	wbuf   []byte // plaintext bytes of the packet being written
	out    []byte

	rmu    sync.Mutex
	opener *Opener
	replay *ReplayWindow
	hdr    [HeaderSize]byte
	sealed []byte
	plain  []byte // backing store of rbuf, reused per packet
	rbuf   []byte // opened bytes not yet returned
	rerr   error
}

func newSessionConn(conn net.Conn, sendKey, recvKey []byte, id uint64) (*SessionConn, error) {
	s, err := NewSealer(sendKey, 0)
	if err != nil {
		return nil, err
	}
	o, err := NewOpener(recvKey)
	if err != nil {
		return nil, err
	}
	return &SessionConn{Conn: conn, id: id, sealer: s, opener: o, replay: NewReplayWindow(0)}, nil
}

// SessionID is the id the server chose for the session.
func (c *SessionConn) SessionID() uint64 { return c.id }

// Write sends, sealed, every packet b completes (with what earlier writes
// left incomplete) and keeps an incomplete tail for the next write. It
// returns len(b) once those are written.
func (c *SessionConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n := len(b)
	c.out = c.out[:0]
	// Complete a packet started by an earlier write.
	for len(c.wbuf) > 0 && len(b) > 0 {
		if len(c.wbuf) < HeaderSize {
			take := min(HeaderSize-len(c.wbuf), len(b))
			c.wbuf = append(c.wbuf, b[:take]...)
			b = b[take:]
			if len(c.wbuf) < HeaderSize {
				break
			}
		}
		h, err := DecodeHeader(c.wbuf)
		if err != nil {
			return 0, fmt.Errorf("wire: session write: %w", err)
		}
		need := HeaderSize + int(h.PayloadLen)
		take := min(need-len(c.wbuf), len(b))
		c.wbuf = append(c.wbuf, b[:take]...)
		b = b[take:]
		if len(c.wbuf) < need {
			break
		}
		if err := c.seal(c.wbuf); err != nil {
			return 0, err
		}
		c.wbuf = c.wbuf[:0]
	}
	// Seal whole packets straight from b; keep the tail.
	for len(b) >= HeaderSize && len(c.wbuf) == 0 {
		h, err := DecodeHeader(b)
		if err != nil {
			return 0, fmt.Errorf("wire: session write: %w", err)
		}
		size := HeaderSize + int(h.PayloadLen)
		if len(b) < size {
			break
		}
		if err := c.seal(b[:size]); err != nil {
			return 0, err
		}
		b = b[size:]
	}
	c.wbuf = append(c.wbuf, b...)
	if len(c.out) > 0 {
		if _, err := c.Conn.Write(c.out); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// seal appends the sealed form of one whole plain packet to c.out.
func (c *SessionConn) seal(pkt []byte) error {
	h, err := DecodeHeader(pkt)
	if err != nil {
		return fmt.Errorf("wire: session write: %w", err)
	}
	h.SessionID = c.id
	if c.out, err = c.sealer.Seal(c.out, &h, pkt[HeaderSize:]); err != nil {
		return fmt.Errorf("wire: session write: %w", err)
	}
	return nil
}

// Read returns opened packet bytes. A packet that fails to open, is not
// sealed, belongs to another session or repeats a sequence number ends the
// connection's reads with that error.
func (c *SessionConn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for len(c.rbuf) == 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		if err := c.readPacket(); err != nil {
			c.rerr = err
			return 0, err
		}
	}
	n := copy(b, c.rbuf)
	c.rbuf = c.rbuf[n:]
	return n, nil
}

func (c *SessionConn) readPacket() error {
	if _, err := io.ReadFull(c.Conn, c.hdr[:]); err != nil {
		return err
	}
	h, err := DecodeHeader(c.hdr[:])
	if err != nil {
		return err
	}
	if h.Flags&FlagEncrypted == 0 {
		return ErrUnsealed
	}
	if cap(c.sealed) < int(h.PayloadLen) {
		c.sealed = make([]byte, h.PayloadLen)
	}
	c.sealed = c.sealed[:h.PayloadLen]
	if _, err := io.ReadFull(c.Conn, c.sealed); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if err := c.replay.Check(h.Sequence); err != nil {
		return err
	}
	// The plaintext goes after the header in the read buffer, which Read
	// has drained by now.
	if cap(c.plain) < HeaderSize+len(c.sealed) {
		c.plain = make([]byte, HeaderSize+MaxPayloadSize)
	}
	buf := c.plain[:HeaderSize]
	p, err := c.opener.Open(buf[HeaderSize:], Packet{Header: h, Payload: c.sealed})
	if err != nil {
		return err
	}
	if h.SessionID != c.id {
		return fmt.Errorf("%w: session id %d, want %d", ErrOpen, h.SessionID, c.id)
	}
	if _, err := c.replay.commit(h.Sequence); err != nil {
		return err
	}
	p.Header.SessionID = 0
	p.Header.Nonce = [NonceSize]byte{}
	p.Header.Put((*[HeaderSize]byte)(buf[:HeaderSize]))
	c.rbuf = buf[:HeaderSize+len(p.Payload)] // Open wrote the plaintext in place
	return nil
}
