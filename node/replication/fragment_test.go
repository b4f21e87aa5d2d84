package replication

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/purplerain/mesh-operator/engine/redex"
	"github.com/purplerain/mesh-operator/engine/wire"
)

// TestFragmentedEntriesReplicate replicates entries around the packet
// boundary and far past it (1 byte, exactly one packet, one byte more,
// many packets), backfilled and live, between small ones.
func TestFragmentedEntriesReplicate(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	ol := openLog(t, redex.Options{})
	src.add(0, ol)
	sizes := []int{1, MaxUnfragmentedEntry, MaxUnfragmentedEntry + 1, 37*MaxUnfragmentedEntry + 5}
	put := func() {
		for _, n := range sizes {
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(i*13 + n)
			}
			if _, err := ol.Append(p); err != nil {
				t.Fatal(err)
			}
			if _, err := ol.Append([]byte("small")); err != nil {
				t.Fatal(err)
			}
		}
	}
	put() // backfill
	ow := startOwner(t, k, src, "", nil)
	fl := openLog(t, redex.Options{})
	f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil)})
	waitCaughtUp(t, f, fl, ol)
	put() // live tail
	waitCaughtUp(t, f, fl, ol)
	assertReplica(t, fl, ol, 0)
}

// TestPacketReaderDefragments pins the reader: fragments come back as the
// one entry message, in order only, within the bound, and nothing may
// interrupt a fragmented entry.
func TestPacketReaderDefragments(t *testing.T) {
	build := func(mod func(pw *packetWriter)) []byte {
		var buf bytes.Buffer
		pw := newPacketWriter(&buf, 0, 1024)
		mod(pw)
		if err := pw.endPacket(); err != nil {
			t.Fatal(err)
		}
		if err := pw.w.Flush(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	e := redex.Entry{Seq: 7, Time: 99, Payload: bytes.Repeat([]byte("abc"), 1000)}
	stream := build(func(pw *packetWriter) {
		pw.add(appendHeartbeat(nil, heartbeatMsg{Epoch: 1}))
		if err := pw.addFragmented(e); err != nil {
			t.Fatal(err)
		}
		pw.add(appendHeartbeat(nil, heartbeatMsg{Epoch: 2}))
	})
	pr := newPacketReader(bytes.NewReader(stream))
	var kinds []msgKind
	var got redex.Entry
	for {
		msgs, err := pr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range msgs {
			m, err := decodeMessage(b)
			if err != nil {
				t.Fatal(err)
			}
			kinds = append(kinds, m.kind)
			if m.kind == kindEntry {
				got = m.entry
			}
		}
	}
	if len(kinds) != 3 || kinds[1] != kindEntry || got.Seq != 7 || got.Time != 99 || !bytes.Equal(got.Payload, e.Payload) {
		t.Fatalf("read %v, entry seq %d with %d bytes", kinds, got.Seq, len(got.Payload))
	}

	// Cut the stream after the first fragment and append a heartbeat
	// packet: the reader refuses the interruption.
	var buf bytes.Buffer
	pw := newPacketWriter(&buf, 0, 1024)
	if err := pw.addFragmented(e); err != nil {
		t.Fatal(err)
	}
	_ = pw.w.Flush()
	first := buf.Bytes()[:wire.HeaderSize+1024]
	h, _ := wire.DecodeHeader(first)
	hb := build(func(pw *packetWriter) { pw.seq = h.Sequence; pw.add(appendHeartbeat(nil, heartbeatMsg{})) })
	pr = newPacketReader(io.MultiReader(bytes.NewReader(first), bytes.NewReader(hb)))
	if _, err := pr.next(); err != nil {
		t.Fatal(err)
	}
	if _, err := pr.next(); !errors.Is(err, ErrProtocol) {
		t.Fatalf("interrupted fragments: %v", err)
	}
}

// TestHostileFragmentsPastTheBound: an owner that streams
// fragments past MaxEntryPayload is cut off by the follower's reader
// before it holds more than the bound.
func TestHostileFragmentsPastTheBound(t *testing.T) {
	cli, srv := net.Pipe()
	defer cli.Close()
	go func() {
		defer srv.Close()
		pw := newPacketWriter(srv, 0, wire.MaxPlainPayload)
		chunk := make([]byte, pw.maxPayload-wire.FrameLenSize)
		chunk[0] = byte(kindEntry)
		for i := 0; i*len(chunk) <= maxEntryMessage+len(chunk); i++ {
			pw.frag = fragmentMark{on: true, id: 1, index: i, count: 1 << 16}
			pw.add(chunk)
			if pw.endPacket() != nil || pw.w.Flush() != nil {
				return
			}
		}
	}()
	pr := newPacketReader(cli)
	for {
		_, err := pr.next()
		if err == nil {
			if pr.reasm.InFlight() > maxEntryMessage {
				t.Fatalf("reader holds %d bytes, bound %d", pr.reasm.InFlight(), maxEntryMessage)
			}
			continue
		}
		var oe *wire.OversizeError
		if !errors.Is(err, ErrProtocol) || !errors.As(err, &oe) {
			t.Fatalf("want a protocol violation carrying the oversize, got %v", err)
		}
		return
	}
}
