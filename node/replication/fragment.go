package replication

import (
	"fmt"

	"github.com/purplerain/mesh-operator/engine/redex"
	"github.com/purplerain/mesh-operator/engine/wire"
)

// Fragmented entries. An entry message larger than one packet's payload is
// sent as consecutive fragment packets of the shard's stream, one frame
// each, marked with the wire header's fragment flags, id and index; the
// next message starts a new packet. The reader joins them (a
// wire.Reassembler bounded to one entry of MaxEntryPayload, twice over)
// and hands the whole entry message on, so the rest of the protocol never
// sees a fragment. Only entries are fragmented: every other message fits a
// packet.

const (
	// MaxUnfragmentedEntry is the largest entry payload that travels in a
	// single packet with the default ServerOptions.MaxPacketPayload.
	MaxUnfragmentedEntry = wire.MaxPlainPayload - entryOverhead
	// maxEntryMessage bounds one reassembled entry message.
	maxEntryMessage = MaxEntryPayload + entryOverhead
)

// fragmentMark is the fragment fields of the packet being built.
type fragmentMark struct {
	on           bool
	id           uint16
	index, count int
}

func (m fragmentMark) mark(h *wire.Header) {
	if m.on {
		wire.FragmentHeader(h, m.id, m.index, m.count)
	}
}

// addFragmented ends the packet being built and writes e as fragment
// packets (into the buffer; the caller flushes as for any packet). The
// caller checked len(e.Payload) <= MaxEntryPayload.
func (p *packetWriter) addFragmented(e redex.Entry) error {
	if err := p.endPacket(); err != nil {
		return err
	}
	msg := appendEntry(make([]byte, 0, entryOverhead+len(e.Payload)), e)
	chunks, err := wire.SplitEvent(msg, p.maxPayload-wire.FrameLenSize, maxEntryMessage)
	if err != nil {
		return fmt.Errorf("replication: entry %d: %w", e.Seq, err)
	}
	id := p.frag.id + 1
	for i, c := range chunks {
		p.frag = fragmentMark{on: true, id: id, index: i, count: len(chunks)}
		p.add(c)
		err := p.endPacket()
		p.frag = fragmentMark{id: id}
		if err != nil {
			return err
		}
	}
	return nil
}

// defragment replaces the frames of a fragment packet by nothing (until
// its last fragment) or by the whole reassembled message. A fragment
// packet holds exactly one frame; fragments out of order, past the bound or
// outside an entry message break the protocol.
func (pr *packetReader) defragment(h *wire.Header) error {
	if !wire.IsFragment(h) {
		if pr.reasm != nil && pr.reasm.Pending() != 0 {
			return fmt.Errorf("%w: packet %d interrupts a fragmented entry", ErrProtocol, h.Sequence)
		}
		return nil
	}
	if len(pr.events) != 1 {
		return fmt.Errorf("%w: fragment packet with %d frames", ErrProtocol, len(pr.events))
	}
	if pr.reasm == nil {
		pr.reasm = wire.NewReassembler(maxEntryMessage, 2*maxEntryMessage)
	}
	msg, err := pr.reasm.Add(h, pr.events[0])
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	pr.events = pr.events[:0]
	if msg == nil {
		return nil
	}
	if len(msg) == 0 || msgKind(msg[0]) != kindEntry {
		return fmt.Errorf("%w: a fragmented message that is not an entry", ErrProtocol)
	}
	pr.events = append(pr.events, msg)
	return nil
}
