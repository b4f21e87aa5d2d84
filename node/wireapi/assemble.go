package wireapi

import (
	"fmt"

	"github.com/purplerain/mesh-operator/engine/wire"
	"github.com/purplerain/mesh-operator/node/dataapi"
)

// request is one decoded request.
type request struct {
	id     uint64
	kind   msgKind
	events []dataapi.Event
	poll   dataapi.PollRequest
	token  []byte
	// bytes is the payload bytes the request holds (released when its
	// answer is written).
	bytes int
}

// assembler turns a connection's packets into requests. A request's
// packets are consecutive on the connection (clients write each request
// whole), so there is at most one partial request.
type assembler struct {
	cur *request
}

// add takes one packet's frames (which the request may keep) and returns
// the request its FIN packet completes.
func (a *assembler) add(h wire.Header, frames [][]byte) (*request, error) {
	size := int(h.PayloadLen)
	if a.cur == nil {
		head := frames[0]
		if len(head) == 0 {
			return nil, fmt.Errorf("%w: empty request head", ErrProtocol)
		}
		r := &request{id: h.StreamID, kind: msgKind(head[0]), bytes: size}
		switch r.kind {
		case kindIngest:
			if len(head) != 1 {
				return nil, fmt.Errorf("%w: %d bytes after ingest head", ErrProtocol, len(head)-1)
			}
		case kindPoll:
			if len(frames) != 1 || h.Flags&wire.FlagFin == 0 {
				return nil, fmt.Errorf("%w: a poll request is one frame in one packet", ErrProtocol)
			}
			req, err := decodePollRequest(head)
			if err != nil {
				return nil, err
			}
			r.poll = req
			return r, nil
		case kindTopology:
			if len(frames) != 1 || len(head) != 1 || h.Flags&wire.FlagFin == 0 {
				return nil, fmt.Errorf("%w: a topology request is one byte in one packet", ErrProtocol)
			}
			return r, nil
		case kindAuth:
			if len(frames) != 1 || h.Flags&wire.FlagFin == 0 {
				return nil, fmt.Errorf("%w: an auth request is one frame in one packet", ErrProtocol)
			}
			rd := reader{b: head[1:]}
			n := int(rd.u16())
			r.token = rd.take(n)
			if err := rd.done("auth request"); err != nil {
				return nil, err
			}
			if n > wire.MaxControlToken {
				return nil, fmt.Errorf("%w: token of %d bytes", ErrProtocol, n)
			}
			return r, nil
		default:
			return nil, fmt.Errorf("%w: unknown request kind %#x", ErrProtocol, head[0])
		}
		a.cur = r
		frames = frames[1:]
	} else {
		if h.StreamID != a.cur.id {
			return nil, fmt.Errorf("%w: packet of stream %d inside request %d", ErrProtocol, h.StreamID, a.cur.id)
		}
		a.cur.bytes += size
	}
	r := a.cur
	if r.bytes > MaxRequestBytes {
		return nil, fmt.Errorf("%w: request larger than %d bytes", ErrProtocol, MaxRequestBytes)
	}
	if len(r.events)+len(frames) > MaxBatch {
		return nil, fmt.Errorf("%w: ingest of more than %d events", ErrProtocol, MaxBatch)
	}
	for _, f := range frames {
		e, err := decodeEvent(f)
		if err != nil {
			return nil, err
		}
		r.events = append(r.events, e)
	}
	if h.Flags&wire.FlagFin == 0 {
		return nil, nil
	}
	a.cur = nil
	return r, nil
}
