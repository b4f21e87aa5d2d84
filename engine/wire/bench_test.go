package wire

import (
	"bytes"
	"testing"
)

var sinkHeader Header

func BenchmarkHeaderEncode(b *testing.B) {
	h := sampleHeader()
	var buf [HeaderSize]byte
	for b.Loop() {
		h.Put(&buf)
	}
	if buf[0] == 0 {
		b.Fatal("not written")
	}
}

func BenchmarkHeaderDecodeInto(b *testing.B) {
	h := sampleHeader()
	enc := h.AppendTo(nil)
	var out Header
	for b.Loop() {
		if err := out.Decode(enc); err != nil {
			b.Fatal(err)
		}
	}
	sinkHeader = out
}

func BenchmarkHeaderDecode(b *testing.B) {
	h := sampleHeader()
	enc := h.AppendTo(nil)
	var out Header
	for b.Loop() {
		var err error
		out, err = DecodeHeader(enc)
		if err != nil {
			b.Fatal(err)
		}
	}
	sinkHeader = out
}

// The Net figure (10.8 µs for 50 events) is for building a packet; we
// report the plain build and the build plus ChaCha20-Poly1305 sealing.
func benchEvents() [][]byte {
	evs := make([][]byte, 50)
	for i := range evs {
		evs[i] = bytes.Repeat([]byte{byte(i)}, 64)
	}
	return evs
}

func BenchmarkPacketBuild50(b *testing.B) {
	evs := benchEvents()
	bl, _ := NewBuilder(sampleHeader(), DefaultMaxPayload)
	b.SetBytes(int64(50 * 64))
	for b.Loop() {
		bl.Reset(sampleHeader())
		for _, ev := range evs {
			if err := bl.Add(ev); err != nil {
				b.Fatal(err)
			}
		}
		_ = bl.Build()
	}
}

func BenchmarkPacketBuildSeal50(b *testing.B) {
	evs := benchEvents()
	bl, _ := NewBuilder(sampleHeader(), DefaultMaxPayload)
	s, _ := NewSealer(testKey(1), 1)
	out := make([]byte, 0, 8192)
	b.SetBytes(int64(50 * 64))
	for b.Loop() {
		bl.Reset(sampleHeader())
		for _, ev := range evs {
			if err := bl.Add(ev); err != nil {
				b.Fatal(err)
			}
		}
		var err error
		out, err = bl.Seal(out[:0], s)
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPacketDecodeOpen50(b *testing.B) {
	bl, _ := NewBuilder(sampleHeader(), DefaultMaxPayload)
	for _, ev := range benchEvents() {
		_ = bl.Add(ev)
	}
	s, _ := NewSealer(testKey(1), 1)
	o, _ := NewOpener(testKey(1))
	pkt, _ := bl.Seal(nil, s)
	plain := make([]byte, 0, 8192)
	evs := make([][]byte, 0, 50)
	b.SetBytes(int64(50 * 64))
	var p Packet
	for b.Loop() {
		if err := p.Decode(pkt); err != nil {
			b.Fatal(err)
		}
		op, err := o.Open(plain[:0], p)
		if err != nil {
			b.Fatal(err)
		}
		if evs, err = op.Events(evs[:0]); err != nil || len(evs) != 50 {
			b.Fatal(err)
		}
	}
}

func BenchmarkReplayCommit(b *testing.B) {
	g := NewReplayGuard(DefaultReplayWindow, nil)
	var s uint64
	for b.Loop() {
		if err := g.Commit(1, s); err != nil {
			b.Fatal(err)
		}
		s++
	}
}
