package wireapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/purplerain/mesh-operator/engine/wire"
	"github.com/purplerain/mesh-operator/node/dataapi"
)

// TestLargeEventsAreFragmented ingests and polls back events around the
// packet boundary and far past it: 1 byte, a frame of exactly one packet,
// one byte more (two fragments) and many packets; each comes back whole
// over the binary data API.
func TestLargeEventsAreFragmented(t *testing.T) {
	n := newNode(t, ownerOf(1, "a"))
	_, c := serve(t, n, nil)
	ctx := context.Background()
	exact := MaxFrame - 2 // keyLen u16 + payload fill one packet's frame exactly
	sizes := map[string]int{"1 byte": 1, "exactly one packet": exact, "one packet + 1": exact + 1, "many packets": 40*MaxFrame + 17, "largest": MaxEventSize}
	var order []string
	var batch []dataapi.Event
	for name, size := range sizes {
		p := make([]byte, size)
		for i := range p {
			p[i] = byte(i*31 + size)
		}
		order = append(order, name)
		batch = append(batch, dataapi.Event{Payload: p})
	}
	// One at a time, then all in one request (fragmented events between
	// whole ones).
	for i, e := range batch {
		if _, err := c.Ingest(ctx, []dataapi.Event{e}); err != nil {
			t.Fatalf("%s: %v", order[i], err)
		}
	}
	mixed := append([]dataapi.Event{{Payload: []byte("small-before")}}, batch...)
	mixed = append(mixed, dataapi.Event{Payload: []byte("small-after")})
	acks, err := c.Ingest(ctx, mixed)
	if err != nil || len(acks) != len(mixed) {
		t.Fatalf("mixed batch: %d acks, %v", len(acks), err)
	}
	want := append(append([]dataapi.Event{}, batch...), mixed...)
	var got []dataapi.StoredEvent
	cursor := ""
	for {
		resp, err := c.Poll(ctx, dataapi.PollRequest{Cursor: cursor, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, resp.Events...)
		cursor = resp.Cursor
		if !resp.HasMore {
			break
		}
	}
	if len(got) != len(want) {
		t.Fatalf("polled %d events, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i].Payload, want[i].Payload) || got[i].Seq != uint64(i) {
			t.Fatalf("event %d (seq %d, %d bytes) differs from the %d bytes sent", i, got[i].Seq, len(got[i].Payload), len(want[i].Payload))
		}
	}
}

func TestOversizeEventIsRefusedTyped(t *testing.T) {
	n := newNode(t, ownerOf(1, "a"))
	_, c := serve(t, n, nil)
	ctx := context.Background()
	_, err := c.Ingest(ctx, []dataapi.Event{{Key: []byte("k"), Payload: make([]byte, MaxEventSize)}})
	var oe *wire.OversizeError
	if !errors.Is(err, ErrFrameTooLarge) || !errors.Is(err, wire.ErrEventOversize) || !errors.As(err, &oe) || oe.Max != MaxEventSize {
		t.Fatalf("oversize ingest: %v", err)
	}
	// Nothing was sent: the connection still works and holds nothing.
	if _, err := c.Ingest(ctx, []dataapi.Event{{Payload: []byte("x")}}); err != nil {
		t.Fatalf("connection after the refusal: %v", err)
	}
	resp, err := c.Poll(ctx, dataapi.PollRequest{Limit: 10})
	if err != nil || len(resp.Events) != 1 {
		t.Fatalf("stored %d events (%v), want only the small one", len(resp.Events), err)
	}
}

// TestHostileFragmentsCloseTheConnection: a client that sends fragments
// past the event bound, out of order or outside a request loses its
// connection; the server never buffers past its bounds.
func TestHostileFragmentsCloseTheConnection(t *testing.T) {
	n := newNode(t, ownerOf(1, "a"))
	frag := func(seq uint64, id uint16, index, count int, fin bool, chunk []byte) []byte {
		h := wire.Header{Subprotocol: Subprotocol, StreamID: 1, Sequence: seq}
		if fin {
			h.Flags = wire.FlagFin
		}
		wire.FragmentHeader(&h, id, index, count)
		b, err := wire.BuildPacket(nil, h, [][]byte{chunk}, MaxPacketPayload)
		if err != nil {
			t.Fatal(err)
		}
		hh, _ := wire.DecodeHeader(b)
		hh.FragmentFlags, hh.FragmentID, hh.FragmentOffset = h.FragmentFlags, h.FragmentID, h.FragmentOffset
		hh.Put((*[wire.HeaderSize]byte)(b))
		return b
	}
	head := rawPacket(t, 1, 1, 0, []byte{byte(kindIngest)})
	big := make([]byte, MaxFrame)
	var tooBig []byte
	tooBig = append(tooBig, head...)
	for i := 0; i*MaxFrame <= maxEventFrame; i++ {
		tooBig = append(tooBig, frag(uint64(i+2), 1, i, 1<<15, false, big)...)
	}
	for name, data := range map[string][]byte{
		"fragment outside a request": frag(1, 1, 0, 2, false, []byte("x")),
		"fragments out of order":     append(append(append([]byte{}, head...), frag(2, 1, 0, 3, false, big)...), frag(3, 1, 2, 3, true, big)...),
		"request ends mid-event":     append(append([]byte{}, head...), frag(2, 1, 0, 3, true, big)...),
		"event past the bound":       tooBig,
	} {
		t.Run(name, func(t *testing.T) {
			s, err := NewServer(ServerOptions{Backend: n})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			cli, srv := net.Pipe()
			done := make(chan error, 1)
			go func() { done <- s.ServeConn(srv) }()
			go func() { _, _ = cli.Write(data) }()
			if err := <-done; !errors.Is(err, ErrProtocol) {
				t.Fatalf("ServeConn: %v, want a protocol violation", err)
			}
			_, _ = io.ReadAll(cli)
			cli.Close()
		})
	}
	resp, err := n.Poll(context.Background(), dataapi.PollRequest{Limit: 10})
	if err != nil || len(resp.Events) != 0 {
		t.Fatalf("hostile fragments stored %d events (%v)", len(resp.Events), err)
	}
}
