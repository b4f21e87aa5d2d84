package wire

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"io"
	"net"
	"testing"
)

// relay copies client→server packets through mutate (which may change,
// drop or repeat them; index 0 is the hello) and server→client bytes
// unchanged.
func relay(t *testing.T, mutate func(i int, pkt []byte) [][]byte) (client, server net.Conn) {
	t.Helper()
	c1, r1 := net.Pipe()
	r2, s2 := net.Pipe()
	go func() {
		defer r2.Close()
		for i := 0; ; i++ {
			var hb [HeaderSize]byte
			if _, err := io.ReadFull(r1, hb[:]); err != nil {
				return
			}
			h, err := DecodeHeader(hb[:])
			if err != nil {
				return
			}
			pkt := append(hb[:], make([]byte, h.PayloadLen)...)
			if _, err := io.ReadFull(r1, pkt[HeaderSize:]); err != nil {
				return
			}
			out := [][]byte{pkt}
			if mutate != nil {
				out = mutate(i, pkt)
			}
			for _, p := range out {
				if _, err := r2.Write(p); err != nil {
					return
				}
			}
		}
	}()
	go func() { _, _ = io.Copy(r1, r2); r1.Close() }()
	t.Cleanup(func() { c1.Close(); s2.Close() })
	return c1, s2
}

func handshake(t *testing.T, cs ClientSession, ss ServerSession, cc, sc net.Conn) (*SessionConn, *SessionConn, error) {
	t.Helper()
	type res struct {
		c   *SessionConn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ss.Accept(sc)
		if err != nil {
			sc.Close()
		}
		ch <- res{c, err}
	}()
	c, err := cs.Handshake(cc)
	if err != nil {
		cc.Close()
	}
	s := <-ch
	if err == nil {
		err = s.err
	}
	return c, s.c, err
}

func testPacket(t *testing.T, seq uint64, payload string) []byte {
	t.Helper()
	b, err := BuildPacket(nil, Header{Subprotocol: 7, StreamID: 3, Sequence: seq}, [][]byte{[]byte(payload)}, MaxPlainPayload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readPlain(r io.Reader) ([]byte, error) {
	var hb [HeaderSize]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return nil, err
	}
	h, err := DecodeHeader(hb[:])
	if err != nil {
		return nil, err
	}
	pkt := append(hb[:], make([]byte, h.PayloadLen)...)
	_, err = io.ReadFull(r, pkt[HeaderSize:])
	return pkt, err
}

func TestSessionRoundTripBothWays(t *testing.T) {
	srvKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	cc, sc := net.Pipe()
	defer cc.Close()
	defer sc.Close()
	if !func() bool {
		var hb [HeaderSize]byte
		h := Header{Subprotocol: 7, PayloadLen: FrameLenSize + helloSize, EventCount: 1}
		h.Put(&hb)
		return IsSessionHello(hb[:])
	}() {
		t.Fatal("a hello header is not recognised")
	}
	c, s, err := handshake(t, ClientSession{Subprotocol: 7, TrustedServerKeys: []ed25519.PublicKey{srvKey.Public().(ed25519.PublicKey)}}, ServerSession{Signer: srvKey}, cc, sc)
	if err != nil {
		t.Fatal(err)
	}
	if c.SessionID() != s.SessionID() {
		t.Fatal("the two ends disagree on the session id")
	}
	for i := uint64(1); i <= 50; i++ {
		want := testPacket(t, i, string(bytes.Repeat([]byte{byte(i)}, int(i)*100)))
		done := make(chan error, 1)
		go func() {
			// Written in two pieces: the session seals only whole packets.
			if _, err := c.Write(want[:10]); err != nil {
				done <- err
				return
			}
			_, err := c.Write(want[10:])
			done <- err
		}()
		got, err := readPlain(s)
		if err != nil || <-done != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("packet %d read back differs", i)
		}
		// And back.
		go func() { _, err := s.Write(want); done <- err }()
		if got, err = readPlain(c); err != nil || <-done != nil || !bytes.Equal(got, want) {
			t.Fatalf("packet %d server→client: %v", i, err)
		}
	}
}

func TestSessionRefusesTamperReplayAndStrangers(t *testing.T) {
	signer := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32))
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32))
	cs := ClientSession{Subprotocol: 7}
	send := func(t *testing.T, mutate func(int, []byte) [][]byte, pkts ...[]byte) error {
		t.Helper()
		cc, sc := relay(t, mutate)
		c, s, err := handshake(t, cs, ServerSession{}, cc, sc)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for _, p := range pkts {
				if _, err := c.Write(p); err != nil {
					return
				}
			}
		}()
		for range pkts {
			if _, err := readPlain(s); err != nil {
				return err
			}
		}
		return nil
	}
	p1, p2, p3 := testPacket(t, 1, "one"), testPacket(t, 2, "two"), testPacket(t, 3, "three")
	if err := send(t, nil, p1, p2, p3); err != nil {
		t.Fatalf("clean stream: %v", err)
	}
	for _, at := range []struct {
		name string
		off  int
	}{{"payload byte", HeaderSize + 2}, {"sequence byte", 40}, {"stream byte", 33}, {"tag byte", -1}} {
		t.Run("flipped "+at.name, func(t *testing.T) {
			err := send(t, func(i int, pkt []byte) [][]byte {
				if i == 2 {
					off := at.off
					if off < 0 {
						off = len(pkt) - 1
					}
					pkt[off] ^= 0x01
				}
				return [][]byte{pkt}
			}, p1, p2, p3)
			if !errors.Is(err, ErrOpen) && !errors.Is(err, ErrReplayDuplicate) {
				t.Fatalf("tampered packet: %v, want ErrOpen", err)
			}
		})
	}
	t.Run("replayed packet", func(t *testing.T) {
		err := send(t, func(i int, pkt []byte) [][]byte {
			if i == 1 {
				return [][]byte{pkt, append([]byte{}, pkt...)}
			}
			return [][]byte{pkt}
		}, p1, p2, p3)
		if !errors.Is(err, ErrReplayDuplicate) {
			t.Fatalf("replayed packet: %v, want ErrReplayDuplicate", err)
		}
	})
	t.Run("unsealed packet", func(t *testing.T) {
		err := send(t, func(i int, pkt []byte) [][]byte {
			if i == 2 {
				return [][]byte{testPacket(t, 2, "plain")}
			}
			return [][]byte{pkt}
		}, p1, p2, p3)
		if !errors.Is(err, ErrUnsealed) {
			t.Fatalf("unsealed packet: %v", err)
		}
	})
	t.Run("packet of another session", func(t *testing.T) {
		// Record a sealed packet of one session, inject it into another.
		var recorded []byte
		_ = send(t, func(i int, pkt []byte) [][]byte {
			if i == 1 {
				recorded = append([]byte{}, pkt...)
			}
			return [][]byte{pkt}
		}, p1)
		err := send(t, func(i int, pkt []byte) [][]byte {
			if i == 1 {
				return [][]byte{recorded}
			}
			return [][]byte{pkt}
		}, p1)
		if !errors.Is(err, ErrOpen) {
			t.Fatalf("foreign packet: %v, want ErrOpen", err)
		}
	})
	t.Run("server key not trusted", func(t *testing.T) {
		cc, sc := net.Pipe()
		defer cc.Close()
		defer sc.Close()
		trusting := ClientSession{Subprotocol: 7, TrustedServerKeys: []ed25519.PublicKey{signer.Public().(ed25519.PublicKey)}}
		if _, _, err := handshake(t, trusting, ServerSession{Signer: other}, cc, sc); !errors.Is(err, ErrHandshake) {
			t.Fatalf("untrusted signer: %v", err)
		}
		cc, sc = net.Pipe()
		defer cc.Close()
		defer sc.Close()
		if _, _, err := handshake(t, trusting, ServerSession{}, cc, sc); !errors.Is(err, ErrHandshake) {
			t.Fatalf("unsigned welcome to a client that trusts keys: %v", err)
		}
	})
	t.Run("forged server signature", func(t *testing.T) {
		cc, sc := net.Pipe()
		defer cc.Close()
		defer sc.Close()
		// A man in the middle re-signing with its own key, but presenting
		// the trusted public key: the signature does not verify.
		c1, r1 := net.Pipe()
		defer c1.Close()
		go func() {
			defer r1.Close()
			go func() { _, _ = io.Copy(sc, r1) }()
			buf := make([]byte, HeaderSize+FrameLenSize+welcomeSize)
			if _, err := io.ReadFull(sc, buf); err != nil {
				return
			}
			copy(buf[HeaderSize+FrameLenSize+helloSize+8:], signer.Public().(ed25519.PublicKey))
			_, _ = r1.Write(buf)
		}()
		trusting := ClientSession{Subprotocol: 7, TrustedServerKeys: []ed25519.PublicKey{signer.Public().(ed25519.PublicKey)}}
		if _, _, err := handshake(t, trusting, ServerSession{Signer: other}, c1, cc); !errors.Is(err, ErrHandshake) {
			t.Fatalf("forged signature: %v", err)
		}
	})
}

func TestAllowUnsignedStillRefusesAStrangeSigner(t *testing.T) {
	trustedKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{4}, 32))
	stranger := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, 32))
	cs := ClientSession{Subprotocol: 7, TrustedServerKeys: []ed25519.PublicKey{trustedKey.Public().(ed25519.PublicKey)}, AllowUnsigned: true}
	cc, sc := net.Pipe()
	defer cc.Close()
	defer sc.Close()
	if _, _, err := handshake(t, cs, ServerSession{}, cc, sc); err != nil {
		t.Fatalf("unsigned welcome with AllowUnsigned: %v", err)
	}
	cc, sc = net.Pipe()
	defer cc.Close()
	defer sc.Close()
	if _, _, err := handshake(t, cs, ServerSession{Signer: stranger}, cc, sc); !errors.Is(err, ErrHandshake) {
		t.Fatalf("welcome signed by a stranger: %v", err)
	}
}

// TestSessionWritesInAnyPieces writes a stream of packets (one with an
// empty payload) cut at every possible size of piece: the reader gets the
// same packets.
func TestSessionWritesInAnyPieces(t *testing.T) {
	var stream []byte
	for i := uint64(1); i <= 6; i++ {
		if i == 3 {
			var hb [HeaderSize]byte
			h := Header{Subprotocol: 7, Sequence: i, Flags: FlagHeartbeat}
			h.Put(&hb)
			stream = append(stream, hb[:]...)
			continue
		}
		stream = append(stream, testPacket(t, i, string(bytes.Repeat([]byte{byte(i)}, int(i)*37)))...)
	}
	for _, piece := range []int{1, 7, 63, 64, 65, 100, len(stream)} {
		cc, sc := net.Pipe()
		c, s, err := handshake(t, ClientSession{Subprotocol: 7}, ServerSession{}, cc, sc)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for rest := stream; len(rest) > 0; {
				n := min(piece, len(rest))
				if _, err := c.Write(rest[:n]); err != nil {
					return
				}
				rest = rest[n:]
			}
		}()
		got := make([]byte, len(stream))
		if _, err := io.ReadFull(s, got); err != nil {
			t.Fatalf("pieces of %d: %v", piece, err)
		}
		if !bytes.Equal(got, stream) {
			t.Fatalf("pieces of %d: the stream read back differs", piece)
		}
		cc.Close()
		sc.Close()
	}
}
