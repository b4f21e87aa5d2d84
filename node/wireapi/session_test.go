package wireapi

import (
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/wire"
	"github.com/purplerain/mesh-operator/node/dataapi"
)

func sealedServer(t *testing.T, b dataapi.Backend, key *identity.KeyPair) string {
	t.Helper()
	var keyFn func() *identity.KeyPair
	if key != nil {
		keyFn = func() *identity.KeyPair { return key }
	}
	s, err := NewServer(ServerOptions{Backend: b, SessionKey: keyFn, RequireSealed: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", testHost+":0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Close(); <-done })
	return ln.Addr().String()
}

func TestSealedSessionsCarryTheDataAPI(t *testing.T) {
	key, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	n := newNode(t, ownerOf(1, "a"))
	addr := sealedServer(t, n, key)
	ctx := context.Background()

	c, err := DialSealed(ctx, addr, []ed25519.PublicKey{key.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := make([]byte, 5*MaxFrame) // fragmented and sealed
	for i := range big {
		big[i] = byte(i)
	}
	if _, err := c.Ingest(ctx, []dataapi.Event{{Payload: []byte("small")}, {Payload: big}}); err != nil {
		t.Fatal(err)
	}
	page, err := c.Poll(ctx, dataapi.PollRequest{Limit: 10})
	if err != nil || len(page.Events) != 2 || len(page.Events[1].Payload) != len(big) {
		t.Fatalf("poll over a sealed session: %d events, %v", len(page.Events), err)
	}

	// A plain connection to a port that requires sessions gets nowhere.
	plain, err := Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Ingest(ctx, []dataapi.Event{{Payload: []byte("plain")}}); !errors.Is(err, ErrConnection) {
		t.Fatalf("plain ingest to a sealed-only port: %v", err)
	}
	plain.Close()
	// A client that trusts another key refuses the node.
	other, _ := identity.Generate(nil)
	if _, err := DialSealed(ctx, addr, []ed25519.PublicKey{other.PublicKey()}); !errors.Is(err, wire.ErrHandshake) {
		t.Fatalf("untrusted node key: %v", err)
	}
	page, err = c.Poll(ctx, dataapi.PollRequest{Limit: 10})
	if err != nil || len(page.Events) != 2 {
		t.Fatalf("refused connections stored something: %d events, %v", len(page.Events), err)
	}
}

// TestTamperedOrReplayedSealedRequestIsRefused puts a relay between a
// sealed client and the node that flips a byte of, or repeats, the first
// sealed request packet: the node drops the connection and stores nothing.
func TestTamperedOrReplayedSealedRequestIsRefused(t *testing.T) {
	for _, mode := range []string{"flip", "replay"} {
		t.Run(mode, func(t *testing.T) {
			n := newNode(t, ownerOf(1, "a"))
			addr := sealedServer(t, n, nil)
			ln, err := net.Listen("tcp", testHost+":0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				in, err := ln.Accept()
				if err != nil {
					return
				}
				defer in.Close()
				out, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer out.Close()
				go func() { _, _ = io.Copy(in, out); _ = in.Close() }()
				for i := 0; ; i++ {
					var hb [wire.HeaderSize]byte
					if _, err := io.ReadFull(in, hb[:]); err != nil {
						return
					}
					h, _ := wire.DecodeHeader(hb[:])
					pkt := append(hb[:], make([]byte, h.PayloadLen)...)
					if _, err := io.ReadFull(in, pkt[wire.HeaderSize:]); err != nil {
						return
					}
					if i == 1 && mode == "flip" {
						pkt[len(pkt)-20] ^= 0x40
					}
					if _, err := out.Write(pkt); err != nil {
						return
					}
					if i == 1 && mode == "replay" {
						if _, err := out.Write(pkt); err != nil {
							return
						}
					}
				}
			}()
			ctx := context.Background()
			c, err := DialSealed(ctx, ln.Addr().String(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.Ingest(ctx, []dataapi.Event{{Payload: []byte("tampered-or-replayed")}})
			if mode == "flip" && !errors.Is(err, ErrConnection) {
				t.Fatalf("tampered ingest: %v, want the connection dropped", err)
			}
			// A replayed packet: the first copy may be served before the
			// node reads the second and drops the connection, but the
			// replay itself is never served.
			page, err := n.Poll(ctx, dataapi.PollRequest{Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			want := 0
			if mode == "replay" {
				want = 1
			}
			if len(page.Events) > want {
				t.Fatalf("%s: stored %d events, want at most %d", mode, len(page.Events), want)
			}
		})
	}
}
