package replication

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/purplerain/mesh-operator/engine/redex"
	"github.com/purplerain/mesh-operator/engine/wire"
)

// reencode encodes a decoded message again.
func reencode(m message) []byte {
	switch m.kind {
	case kindSubscribe:
		return appendSubscribe(nil, m.subscribe)
	case kindAccept:
		return appendAccept(nil, m.accept)
	case kindRefuse:
		return appendRefuse(nil, m.refuse)
	case kindEntry:
		return appendEntry(nil, m.entry)
	case kindAck:
		return appendAck(nil, m.ack)
	case kindHeartbeat:
		return appendHeartbeat(nil, m.heartbeat)
	}
	return nil
}

func sampleMessages() [][]byte {
	return [][]byte{
		appendSubscribe(nil, subscribeMsg{Shard: 7, From: 42, Epoch: 3, Name: "mesh-1", Token: []byte{1, 2, 3}}),
		appendSubscribe(nil, subscribeMsg{Shard: 0, From: 0, Epoch: 0}),
		appendSubscribe(nil, subscribeMsg{Shard: 1, From: 9, Epoch: 2, HasPrev: true, Prev: entryID{Time: -1, Flags: redex.FlagInline, CRC: 0xdeadbeef}, Name: "n"}),
		appendAccept(nil, acceptMsg{Shard: 7, Epoch: 3, From: 42, OwnerNext: 50, OwnerFirst: 10}),
		appendRefuse(nil, refuseMsg{Shard: 7, Code: RefuseLagged, Epoch: 3, Seq: 10, Reason: "pruned"}),
		appendEntry(nil, redex.Entry{Seq: 42, Time: -5, Flags: redex.FlagTombstone, Payload: []byte("payload")}),
		appendEntry(nil, redex.Entry{Seq: 43, Time: 1}),
		appendAck(nil, ackMsg{Shard: 7, Next: 43}),
		appendHeartbeat(nil, heartbeatMsg{Shard: 7, Epoch: 3, OwnerNext: 99}),
	}
}

func TestMessagesRoundTrip(t *testing.T) {
	for i, b := range sampleMessages() {
		m, err := decodeMessage(b)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got := reencode(m); !bytes.Equal(got, b) {
			t.Fatalf("message %d: re-encoded %x, want %x", i, got, b)
		}
	}
}

func TestDecodeMessageRejectsTruncationTrailingBytesAndUnknownKinds(t *testing.T) {
	for i, b := range sampleMessages() {
		if m, _ := decodeMessage(b); m.kind == kindEntry {
			// An entry's payload is the rest of the frame: only the
			// fixed part can be truncated.
			if _, err := decodeMessage(b[:1+8+8+3]); !errors.Is(err, ErrShortMessage) {
				t.Fatalf("truncated entry: %v, want ErrShortMessage", err)
			}
			continue
		}
		if _, err := decodeMessage(b[:len(b)-1]); err == nil {
			t.Fatalf("message %d truncated by one byte decoded", i)
		}
		if _, err := decodeMessage(append(append([]byte(nil), b...), 0)); !errors.Is(err, ErrProtocol) {
			t.Fatalf("message %d with a trailing byte: %v, want ErrProtocol", i, err)
		}
	}
	for _, b := range [][]byte{nil, {0}, {99, 1, 2}} {
		if _, err := decodeMessage(b); err == nil {
			t.Fatalf("decoded %x", b)
		}
	}
	bad := appendRefuse(nil, refuseMsg{Shard: 1, Code: RefuseDenied})
	bad[3] = byte(refuseMax + 1)
	if _, err := decodeMessage(bad); !errors.Is(err, ErrProtocol) {
		t.Fatalf("unknown refuse code: %v, want ErrProtocol", err)
	}
}

// stream builds a byte stream of packets, one per group of messages.
func streamOf(shard uint16, groups ...[][]byte) []byte {
	var out bytes.Buffer
	pw := newPacketWriter(&out, shard, wire.MaxPlainPayload)
	for _, g := range groups {
		for _, m := range g {
			pw.add(m)
		}
		_ = pw.endPacket()
	}
	_ = pw.w.Flush()
	return out.Bytes()
}

func TestPacketReaderChecksSequenceAndSubprotocol(t *testing.T) {
	msgs := sampleMessages()
	good := streamOf(1, msgs[:3], msgs[3:])
	pr := newPacketReader(bytes.NewReader(good))
	var got [][]byte
	for {
		ms, err := pr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			got = append(got, append([]byte(nil), m...))
		}
	}
	if len(got) != len(msgs) {
		t.Fatalf("read %d messages, want %d", len(got), len(msgs))
	}
	for i := range msgs {
		if !bytes.Equal(got[i], msgs[i]) {
			t.Fatalf("message %d differs", i)
		}
	}

	// The second packet repeated: a sequence gap/repeat is refused.
	one := streamOf(1, msgs[:1])
	dup := append(append([]byte(nil), one...), one...)
	pr = newPacketReader(bytes.NewReader(dup))
	if _, err := pr.next(); err != nil {
		t.Fatal(err)
	}
	if _, err := pr.next(); !errors.Is(err, ErrProtocol) {
		t.Fatalf("repeated packet: %v, want ErrProtocol", err)
	}

	// A truncated payload is an unexpected EOF, not a short message.
	pr = newPacketReader(bytes.NewReader(good[:len(good)-1]))
	_, _ = pr.next()
	if _, err := pr.next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated packet: %v, want io.ErrUnexpectedEOF", err)
	}
}

// FuzzDecodePacketStream feeds arbitrary bytes to the packet reader and
// message decoder: they must never panic, and every message they accept
// must re-encode to the same bytes.
func FuzzDecodePacketStream(f *testing.F) {
	msgs := sampleMessages()
	f.Add(streamOf(1, msgs))
	f.Add(streamOf(1, msgs[:2], msgs[2:5], msgs[5:]))
	f.Add(streamOf(0, [][]byte{appendEntry(nil, redex.Entry{Seq: 1, Payload: make([]byte, 300)})}))
	f.Add(streamOf(1, msgs)[:70])
	f.Add([]byte{})
	f.Add(make([]byte, wire.HeaderSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		pr := newPacketReader(bytes.NewReader(b))
		for range 64 {
			ms, err := pr.next()
			if err != nil {
				return
			}
			for _, raw := range ms {
				m, err := decodeMessage(raw)
				if err != nil {
					continue
				}
				if got := reencode(m); !bytes.Equal(got, raw) {
					t.Fatalf("message %x re-encoded as %x", raw, got)
				}
			}
		}
	})
}

func TestIsReplicationRecognisesTheFirstHeader(t *testing.T) {
	b := streamOf(1, sampleMessages()[:1])
	if !IsReplication(b[:wire.HeaderSize]) {
		t.Fatal("a replication packet's header not recognised")
	}
	events, err := wire.BuildPacket(nil, wire.Header{Subprotocol: wire.SubprotocolEvents}, [][]byte{[]byte("x")}, wire.DefaultMaxPayload)
	if err != nil {
		t.Fatal(err)
	}
	if IsReplication(events[:wire.HeaderSize]) || IsReplication(b[:10]) {
		t.Fatal("an events header or a short prefix taken for replication")
	}
}
