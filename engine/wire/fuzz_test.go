package wire

import (
	"bytes"
	"errors"
	"testing"
)

// The fuzz targets check that malformed input is an error, never a panic,
// and that whatever decodes re-encodes to the same bytes.

func FuzzDecodeHeader(f *testing.F) {
	h := sampleHeader()
	f.Add(h.AppendTo(nil))
	f.Add(make([]byte, HeaderSize))
	f.Add([]byte("MS\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeHeader(b)
		if err != nil {
			if len(b) >= HeaderSize && errors.Is(err, ErrShortHeader) {
				t.Fatalf("full-size input called short: %v", err)
			}
			return
		}
		if again := h.AppendTo(nil); !bytes.Equal(again, b[:HeaderSize]) {
			t.Fatalf("re-encode differs:\n in %x\nout %x", b[:HeaderSize], again)
		}
	})
}

func FuzzDecodePacket(f *testing.F) {
	pkt, _ := BuildPacket(nil, sampleHeader(), [][]byte{[]byte("a"), []byte("bc"), nil}, DefaultMaxPayload)
	f.Add(pkt)
	s, _ := NewSealer(testKey(3), 1)
	sh := Header{EventCount: 1}
	sealed, _ := s.Seal(nil, &sh, []byte{1, 0, 0, 0, 'z'})
	f.Add(sealed)
	f.Add((&Header{PayloadLen: 4, EventCount: 1}).AppendTo([]byte{}))
	o, _ := NewOpener(testKey(3))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePacket(b)
		if err != nil {
			return
		}
		if p.Header.Flags&FlagEncrypted != 0 {
			opened, err := o.Open(nil, p)
			if err != nil {
				return
			}
			p = opened
		}
		evs, err := p.Events(nil)
		if err != nil {
			return
		}
		if len(evs) != int(p.Header.EventCount) {
			t.Fatalf("%d events, header says %d", len(evs), p.Header.EventCount)
		}
		// What decodes rebuilds to the same packet (the builder caps
		// payloads at what could also be sealed).
		if len(p.Payload) > MaxPlainPayload {
			return
		}
		again, err := BuildPacket(nil, p.Header, evs, MaxPlainPayload)
		if err != nil {
			t.Fatalf("decoded events do not rebuild: %v", err)
		}
		if !bytes.Equal(again[HeaderSize:], p.Payload) {
			t.Fatal("rebuilt payload differs")
		}
	})
}

func FuzzDecodeControl(f *testing.F) {
	for _, m := range []Control{
		Subscribe{Channel: "orders", Token: []byte("tok")},
		Unsubscribe{Channel: "orders"},
		Ack{Channel: "o", Status: AckOK, Seq: 9},
		WindowUpdate{StreamID: 1, Consumed: 2, Window: 3},
	} {
		b, _ := m.AppendTo(nil)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeControl(b)
		if err != nil {
			return
		}
		again, err := m.AppendTo(nil)
		if err != nil {
			t.Fatalf("decoded %#v does not encode: %v", m, err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encode differs:\n in %x\nout %x", b, again)
		}
	})
}
