package wire_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/wire"
)

// A client subscribes to a channel with a permission token: the token rides
// in a Subscribe control message inside a sealed packet; the node opens the
// packet, checks anti-replay, decodes the control message and verifies the
// token for the channel. A replay of the same packet is refused.
func TestSubscribeWithTokenOverSealedPacket(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	operator, _ := identity.Generate(nil)
	client, _ := identity.Generate(nil)
	tok, err := operator.TryIssue(identity.Grant{Subject: client.PublicKey(), Scope: identity.ScopeConsume, TTL: time.Minute, Channel: "orders"}, now)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := wire.Subscribe{Channel: "orders", Token: tok.Encode()}.AppendTo(nil)
	if err != nil {
		t.Fatal(err)
	}

	key := bytes.Repeat([]byte{9}, wire.KeySize)
	sealer, _ := wire.NewSealer(key, 1)
	b, _ := wire.NewBuilder(wire.Header{
		Subprotocol: wire.SubprotocolControl,
		ChannelHash: wire.ChannelHash("orders"),
		OriginHash:  wire.OriginHash32(client.OriginHash()),
		SessionID:   77,
		Sequence:    1,
		HopTTL:      4,
	}, wire.DefaultMaxPayload)
	if err := b.Add(sub); err != nil {
		t.Fatal(err)
	}
	pkt, err := b.Seal(nil, sealer)
	if err != nil {
		t.Fatal(err)
	}

	opener, _ := wire.NewOpener(key)
	guard := wire.NewReplayGuard(0, slog.New(slog.DiscardHandler))
	verifier := identity.NewVerifier([]ed25519.PublicKey{operator.PublicKey()})
	receive := func(pkt []byte) error {
		p, err := wire.DecodePacket(pkt)
		if err != nil {
			return err
		}
		if err := guard.Check(p.Header.SessionID, p.Header.Sequence); err != nil {
			return err
		}
		p, err = opener.Open(nil, p)
		if err != nil {
			return err
		}
		if err := guard.Commit(p.Header.SessionID, p.Header.Sequence); err != nil {
			return err
		}
		evs, err := p.Events(nil)
		if err != nil {
			return err
		}
		m, err := wire.DecodeControl(evs[0])
		if err != nil {
			return err
		}
		s := m.(wire.Subscribe)
		got, err := identity.ParseToken(s.Token)
		if err != nil {
			return err
		}
		return verifier.Verify(got, now.Add(time.Second), identity.ScopeConsume, identity.ForChannel(s.Channel))
	}
	if err := receive(pkt); err != nil {
		t.Fatalf("first delivery: %v", err)
	}
	if err := receive(pkt); !errors.Is(err, wire.ErrReplayDuplicate) {
		t.Fatalf("replayed packet: err = %v, want ErrReplayDuplicate", err)
	}
}
