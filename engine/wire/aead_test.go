package wire

import (
	"bytes"
	"errors"
	"testing"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

func TestSealOpenRoundTrip(t *testing.T) {
	s, _ := NewSealer(testKey(1), 0xabcd)
	o, _ := NewOpener(testKey(1))
	b, _ := NewBuilder(sampleHeader(), DefaultMaxPayload)
	_ = b.Add([]byte("secret-1"))
	_ = b.Add([]byte("secret-2"))
	pkt, err := b.Seal(nil, s)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(pkt, []byte("secret")) {
		t.Fatal("sealed packet carries plaintext")
	}
	p, err := DecodePacket(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Events(nil); !errors.Is(err, ErrSealed) {
		t.Fatalf("events of a sealed packet: err = %v, want ErrSealed", err)
	}
	opened, err := o.Open(nil, p)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := opened.Events(nil)
	if err != nil || len(evs) != 2 || string(evs[1]) != "secret-2" {
		t.Fatalf("events after open: %q, %v", evs, err)
	}
}

func TestSealUsesFreshNonces(t *testing.T) {
	s, _ := NewSealer(testKey(1), 7)
	seen := map[[NonceSize]byte]bool{}
	for i := 0; i < 100; i++ {
		h := Header{}
		if _, err := s.Seal(nil, &h, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if seen[h.Nonce] {
			t.Fatalf("nonce reused at %d", i)
		}
		seen[h.Nonce] = true
	}
	s.counter = ^uint64(0)
	if _, err := s.Seal(nil, &Header{}, nil); !errors.Is(err, ErrNonceExhausted) {
		t.Fatalf("err = %v, want ErrNonceExhausted", err)
	}
}

func TestOpenRejectsTamperingExceptHopCount(t *testing.T) {
	s, _ := NewSealer(testKey(1), 1)
	o, _ := NewOpener(testKey(1))
	h := sampleHeader()
	h.HopCount = 0
	h.EventCount = 1
	pkt, err := s.Seal(nil, &h, []byte{4, 0, 0, 0, 'd', 'a', 't', 'a'})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := DecodePacket(pkt); err != nil {
		t.Fatalf("sealed packet does not decode: %v", err)
	} else if _, err := o.Open(nil, p); err != nil {
		t.Fatalf("untouched packet does not open: %v", err)
	}
	opened := 0
	for i := 0; i < len(pkt); i++ {
		b := bytes.Clone(pkt)
		if i == hopCountOffset {
			b[i] = 1 // a forwarder's increment
		} else {
			b[i] ^= 0x01
		}
		p, err := DecodePacket(b)
		if err != nil {
			continue // the header decoder already refuses this change
		}
		opened++
		_, err = o.Open(nil, p)
		if i == hopCountOffset {
			if err != nil {
				t.Fatalf("hop count increment must not break authentication: %v", err)
			}
			continue
		}
		if i == 3 && errors.Is(err, ErrNotSealed) {
			continue // the flip cleared FlagEncrypted
		}
		if !errors.Is(err, ErrOpen) {
			t.Fatalf("flip at byte %d: err = %v, want ErrOpen", i, err)
		}
	}
	if opened < len(pkt)-8 {
		t.Fatalf("only %d of %d flips reached Open; the test is not exercising the AEAD", opened, len(pkt))
	}
	other, _ := NewOpener(testKey(2))
	p, _ := DecodePacket(pkt)
	if _, err := other.Open(nil, p); !errors.Is(err, ErrOpen) {
		t.Fatalf("wrong key: err = %v", err)
	}
	plain, _ := BuildPacket(nil, Header{}, nil, 10)
	pp, _ := DecodePacket(plain)
	if _, err := o.Open(nil, pp); !errors.Is(err, ErrNotSealed) {
		t.Fatalf("unsealed: err = %v", err)
	}
	if _, err := s.Seal(nil, &Header{}, make([]byte, MaxPlainPayload+1)); !errors.Is(err, ErrPayloadTooLarge) {
		t.Fatalf("too large: err = %v", err)
	}
	if _, err := s.Seal(nil, &Header{EventCount: 3}, []byte{0, 0, 0, 0}); !errors.Is(err, ErrEventCount) {
		t.Fatalf("event count beyond plaintext: err = %v, want ErrEventCount", err)
	}
	if _, err := NewSealer([]byte("short"), 0); err == nil {
		t.Fatal("short key accepted")
	}
}
