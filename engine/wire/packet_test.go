package wire

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func events(n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = bytes.Repeat([]byte{byte(i)}, size)
	}
	return out
}

func TestBuildPacketRoundTrip(t *testing.T) {
	evs := [][]byte{[]byte("a"), {}, []byte("hello world")}
	pkt, err := BuildPacket(nil, sampleHeader(), evs, DefaultMaxPayload)
	if err != nil {
		t.Fatal(err)
	}
	p, err := DecodePacket(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if p.Header.EventCount != 3 || int(p.Header.PayloadLen) != 3*FrameLenSize+12 {
		t.Fatalf("header counts: %+v", p.Header)
	}
	got, err := p.Events(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(evs) {
		t.Fatalf("got %d events", len(got))
	}
	for i := range evs {
		if !bytes.Equal(got[i], evs[i]) {
			t.Fatalf("event %d = %q, want %q", i, got[i], evs[i])
		}
	}
}

// Net v0.9 "Silent event_count truncation in packet builder": a batch that
// does not fit is refused whole, never cut short.
func TestSilentEventCountTruncationInPacketBuilder(t *testing.T) {
	max := 100
	// 10 events of 6 bytes = 100 bytes fits exactly; 11 does not.
	if _, err := BuildPacket(nil, Header{}, events(10, 6), max); err != nil {
		t.Fatalf("exact fit refused: %v", err)
	}
	out, err := BuildPacket([]byte("keep"), Header{}, events(11, 6), max)
	if !errors.Is(err, ErrTooManyEvents) {
		t.Fatalf("err = %v, want ErrTooManyEvents", err)
	}
	if out != nil {
		t.Fatal("a refused batch must produce no packet")
	}
	// More events than the 16-bit count can describe, even if tiny.
	if _, err := BuildPacket(nil, Header{}, make([][]byte, MaxEventsPerPacket+1), MaxPlainPayload); !errors.Is(err, ErrTooManyEvents) {
		t.Fatalf("65536 empty events: err = %v, want ErrTooManyEvents", err)
	}
	if _, err := BuildPacket(nil, Header{}, events(1, 97), max); !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("oversized event: err = %v, want ErrEventTooLarge", err)
	}
	if _, err := BuildPacket(nil, Header{}, nil, MaxPlainPayload+1); !errors.Is(err, ErrBadMaxPayload) {
		t.Fatalf("max payload beyond u16 with tag: err = %v, want ErrBadMaxPayload", err)
	}
}

func TestBuilderRefusesWhatDoesNotFit(t *testing.T) {
	b, err := NewBuilder(sampleHeader(), 30)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := b.Add([]byte("123456")); err != nil { // 10 bytes framed
			t.Fatalf("add %d: %v", i, err)
		}
	}
	before := bytes.Clone(b.Build())
	if err := b.Add(nil); !errors.Is(err, ErrPacketFull) {
		t.Fatalf("full packet: err = %v, want ErrPacketFull", err)
	}
	if err := b.Add(make([]byte, 27)); !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("event bigger than payload: err = %v, want ErrEventTooLarge", err)
	}
	if after := b.Build(); !bytes.Equal(before, after) || b.Len() != 3 {
		t.Fatal("a refused Add changed the packet")
	}
	p, err := DecodePacket(b.Build())
	if err != nil {
		t.Fatal(err)
	}
	if evs, err := p.Events(nil); err != nil || len(evs) != 3 {
		t.Fatalf("events = %d, %v", len(evs), err)
	}
	b.Reset(Header{})
	if b.Len() != 0 || b.PayloadSize() != 0 {
		t.Fatal("Reset did not empty the builder")
	}
	if _, err := NewBuilder(Header{}, 0); !errors.Is(err, ErrBadMaxPayload) {
		t.Fatalf("zero max payload: err = %v", err)
	}
}

func TestDecodePacketRejections(t *testing.T) {
	pkt, _ := BuildPacket(nil, Header{HopTTL: 1}, [][]byte{[]byte("abc"), []byte("de")}, DefaultMaxPayload)
	if _, err := DecodePacket(pkt[:len(pkt)-1]); !errors.Is(err, ErrPayloadLength) {
		t.Errorf("short payload: err = %v", err)
	}
	if _, err := DecodePacket(append(bytes.Clone(pkt), 0)); !errors.Is(err, ErrPayloadLength) {
		t.Errorf("trailing byte: err = %v", err)
	}
	frame := func(payload []byte, count uint16) []byte {
		h := Header{PayloadLen: uint16(len(payload)), EventCount: count}
		return append(h.AppendTo(nil), payload...)
	}
	cases := map[string][]byte{
		"fewer frames than count": frame([]byte{1, 0, 0, 0, 'x', 0, 0, 0, 0}, 1),
		"frame past the end":      frame([]byte{9, 0, 0, 0, 'x'}, 1),
		"huge frame length":       frame([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, 1),
		"count but no prefix":     frame([]byte{1, 0, 0, 0, 'x', 1, 0, 0, 0}, 2),
	}
	for name, b := range cases {
		p, err := DecodePacket(b)
		if err != nil {
			t.Errorf("%s: decode: %v", name, err)
			continue
		}
		if _, err := p.Events(nil); !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: err = %v, want ErrBadFrame", name, err)
		}
	}
}

func ExampleBuilder() {
	b, _ := NewBuilder(Header{StreamID: 1}, DefaultMaxPayload)
	var sent int
	for _, ev := range [][]byte{[]byte("one"), []byte("two")} {
		if err := b.Add(ev); errors.Is(err, ErrPacketFull) {
			sent++ // send b.Build(), b.Reset(next header), then add ev again
		}
	}
	p, _ := DecodePacket(b.Build())
	evs, _ := p.Events(nil)
	fmt.Println(sent, len(evs), string(evs[1]))
	// Output: 0 2 two
}

func TestPacketDecodeIntoMatchesDecodePacket(t *testing.T) {
	pkt, _ := BuildPacket(nil, sampleHeader(), [][]byte{[]byte("x")}, DefaultMaxPayload)
	want, err := DecodePacket(pkt)
	if err != nil {
		t.Fatal(err)
	}
	var p Packet
	if err := p.Decode(pkt); err != nil || p.Header != want.Header || !bytes.Equal(p.Payload, want.Payload) {
		t.Fatalf("Decode into: %+v, %v", p, err)
	}
	if err := p.Decode(pkt[:len(pkt)-1]); !errors.Is(err, ErrPayloadLength) {
		t.Fatalf("err = %v", err)
	}
}
