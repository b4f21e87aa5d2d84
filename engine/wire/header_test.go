package wire

import (
	"bytes"
	"errors"
	"testing"
)

func sampleHeader() Header {
	h := Header{
		Flags:          FlagReliable | FlagFin,
		Priority:       7,
		HopTTL:         8,
		HopCount:       2,
		FragmentFlags:  0x01,
		Subprotocol:    SubprotocolEvents,
		ChannelHash:    ChannelHash("orders"),
		SessionID:      0x1122334455667788,
		StreamID:       0x99aabbccddeeff00,
		Sequence:       42,
		OriginHash:     OriginHash32(0xcafebabe_deadbeef),
		SubnetID:       0x01020304,
		FragmentID:     9,
		FragmentOffset: 512,
		PayloadLen:     100,
		EventCount:     3,
	}
	for i := range h.Nonce {
		h.Nonce[i] = byte(0xa0 + i)
	}
	return h
}

func TestHeaderRoundTrip(t *testing.T) {
	h := sampleHeader()
	var b [HeaderSize]byte
	h.Put(&b)
	got, err := DecodeHeader(b[:])
	if err != nil {
		t.Fatal(err)
	}
	if got != h {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, h)
	}
	if got.OriginHash != 0xdeadbeef {
		t.Fatalf("origin hash on the wire is the low 32 bits, got 0x%x", got.OriginHash)
	}
	if !bytes.Equal(h.AppendTo([]byte{0xff}), append([]byte{0xff}, b[:]...)) {
		t.Fatal("AppendTo and Put disagree")
	}
}

func TestHeaderLayoutOffsets(t *testing.T) {
	h := sampleHeader()
	var b [HeaderSize]byte
	h.Put(&b)
	checks := []struct {
		name string
		off  int
		want []byte
	}{
		{"magic", 0, []byte{0x4d, 0x53}},
		{"version", 2, []byte{Version}},
		{"flags", 3, []byte{byte(FlagReliable | FlagFin)}},
		{"hop count", 6, []byte{2}},
		{"nonce", 12, h.Nonce[:]},
		{"sequence", 40, []byte{42, 0, 0, 0, 0, 0, 0, 0}},
		{"origin", 48, []byte{0xef, 0xbe, 0xad, 0xde}},
		{"payload len", 60, []byte{100, 0}},
		{"event count", 62, []byte{3, 0}},
	}
	for _, c := range checks {
		if got := b[c.off : c.off+len(c.want)]; !bytes.Equal(got, c.want) {
			t.Errorf("%s at %d = %x, want %x", c.name, c.off, got, c.want)
		}
	}
}

func TestDecodeHeaderRejections(t *testing.T) {
	good := sampleHeader()
	enc := func(mut func(*Header, *[HeaderSize]byte)) []byte {
		h := good
		var b [HeaderSize]byte
		h.Put(&b)
		mut(&h, &b)
		return b[:]
	}
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"short", enc(func(*Header, *[HeaderSize]byte) {})[:63], ErrShortHeader},
		{"magic", enc(func(_ *Header, b *[HeaderSize]byte) { b[0] = 'X' }), ErrBadMagic},
		{"version", enc(func(_ *Header, b *[HeaderSize]byte) { b[2] = 2 }), ErrUnsupportedVersion},
		{"unknown flag", enc(func(_ *Header, b *[HeaderSize]byte) { b[3] |= 0x80 }), ErrUnknownFlags},
		{"hop count above ttl", enc(func(_ *Header, b *[HeaderSize]byte) { b[6] = 9 }), ErrHopLimit},
		{"event count beyond payload", enc(func(_ *Header, b *[HeaderSize]byte) { b[62] = 26 }), ErrEventCount},
		{"sealed payload shorter than tag", enc(func(_ *Header, b *[HeaderSize]byte) {
			b[3] |= byte(FlagEncrypted)
			b[60], b[61], b[62] = 15, 0, 0
		}), ErrEventCount},
	}
	for _, c := range cases {
		if _, err := DecodeHeader(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	// 25 events of 4 bytes each is exactly 100 bytes: the boundary fits.
	if _, err := DecodeHeader(enc(func(_ *Header, b *[HeaderSize]byte) { b[62] = 25 })); err != nil {
		t.Errorf("25 empty events in 100 bytes: %v", err)
	}
}

func TestChannelHashStable(t *testing.T) {
	if ChannelHash("orders") != ChannelHash("orders") || ChannelHash("orders") == ChannelHash("payments") {
		t.Fatal("channel hash must be a function of the name and separate these two")
	}
}
