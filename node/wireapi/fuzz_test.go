package wireapi

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/purplerain/mesh-operator/engine/wire"
	"github.com/purplerain/mesh-operator/node/dataapi"
)

// decodeRequests runs b through the server's packet reader and assembler,
// as ServeConn does, and returns the requests it completed.
func decodeRequests(b []byte) ([]*request, error) {
	pr := newPacketReader(bytes.NewReader(b))
	var asm assembler
	var frames [][]byte
	var out []*request
	reasm := wire.NewReassembler(maxEventFrame, MaxReassembly)
	for {
		h, err := pr.header()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		if frames, err = pr.payload(h, frames); err != nil {
			return out, err
		}
		if frames, err = defragment(reasm, &h, frames, asm.cur != nil); err != nil {
			return out, err
		}
		req, err := asm.add(h, frames)
		if err != nil {
			return out, err
		}
		if req != nil {
			out = append(out, req)
		}
	}
}

// decodeAnswers runs b through the client's answer decoders.
func decodeAnswers(b []byte) error {
	pr := newPacketReader(bytes.NewReader(b))
	for {
		h, err := pr.header()
		if err != nil {
			return err
		}
		frames, err := pr.payload(h, nil)
		if err != nil {
			return err
		}
		if wire.IsFragment(&h) {
			continue // reassembly is pinned by FuzzReassembler (engine/wire)
		}
		if len(frames[0]) == 0 {
			continue
		}
		switch msgKind(frames[0][0]) {
		case kindRefused:
			_, err = decodeRefused(frames[0])
		case kindIngestOK:
			_, err = decodeIngestOK(frames[0])
		case kindPollOK:
			if _, err = decodePollOKHead(frames[0]); err == nil {
				for _, f := range frames[1:] {
					if _, err = decodeStoredEvent(f); err != nil {
						break
					}
				}
			}
		}
		if err != nil && !errors.Is(err, ErrProtocol) {
			return err
		}
	}
}

func stamped(p *packets, seq uint64) []byte {
	s := seq
	return append([]byte(nil), p.stamp(&s)...)
}

// FuzzFrames feeds arbitrary bytes to the server's request decoder and the
// client's answer decoders: they may refuse (with ErrProtocol or a short
// read) but never panic, and whatever the server accepts re-encodes to a
// request it decodes the same way.
func FuzzFrames(f *testing.F) {
	ing := newPackets(1, nil)
	_ = appendIngestRequest(ing, []dataapi.Event{{Key: []byte("k"), Payload: []byte("p")}, {Payload: bytes.Repeat([]byte{1}, 300)}})
	f.Add(stamped(ing, 0))
	poll := newPackets(2, nil)
	_ = appendPollRequest(poll, dataapi.PollRequest{Cursor: "c", Limit: 5})
	f.Add(stamped(poll, 0))
	f.Add(append(stamped(ing, 0), stamped(poll, 1)...))
	ok := newPackets(3, nil)
	_ = appendPollOK(ok, dataapi.PollResponse{Cursor: "x", HasMore: true, StalledShards: []uint16{3}, Events: []dataapi.StoredEvent{{Shard: 1, Seq: 2, Time: 3, Payload: []byte("e")}}})
	f.Add(stamped(ok, 0))
	ref := newPackets(4, nil)
	shard := uint16(2)
	_ = appendRefused(ref, dataapi.ErrorResponse{Code: dataapi.CodeRuleRejected, Error: "no", Shard: &shard, Rule: "r", Rules: []string{"r", "s"}})
	f.Add(stamped(ref, 0))
	auth := newPackets(5, nil)
	_ = appendAuth(auth, []byte("token"))
	f.Add(append(stamped(auth, 0), stamped(ing, 1)...))
	f.Add([]byte{})
	f.Add(make([]byte, wire.HeaderSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = decodeAnswers(b)
		reqs, _ := decodeRequests(b)
		for _, r := range reqs {
			p := newPackets(r.id, nil)
			var err error
			switch r.kind {
			case kindIngest:
				if len(r.events) == 0 {
					continue
				}
				err = appendIngestRequest(p, r.events)
			case kindPoll:
				err = appendPollRequest(p, r.poll)
			case kindAuth:
				err = appendAuth(p, r.token)
			}
			if err != nil {
				t.Fatalf("accepted request does not re-encode: %v", err)
			}
			again, err := decodeRequests(stamped(p, 0))
			if err != nil || len(again) != 1 || again[0].kind != r.kind || len(again[0].events) != len(r.events) || again[0].poll != r.poll || !bytes.Equal(again[0].token, r.token) {
				t.Fatalf("re-encoded request decodes differently: %v", err)
			}
			for i, e := range r.events {
				g := again[0].events[i]
				if !bytes.Equal(g.Key, e.Key) || !bytes.Equal(g.Payload, e.Payload) {
					t.Fatalf("event %d changed in a round trip", i)
				}
			}
		}
	})
}

func TestFrameRoundTrips(t *testing.T) {
	shard := uint16(9)
	for _, e := range []dataapi.ErrorResponse{
		{Code: dataapi.CodeNotOwner, Error: "owned by b", Shard: &shard, Owner: "b", OwnerData: "b:9441"},
		{Code: dataapi.CodeRuleRejected, Error: "rate", Rule: "r1", Rules: []string{"r1", "r2"}, RateLimited: true},
		{Code: dataapi.CodeBehindRetention, Error: "gone"},
	} {
		p := newPackets(1, nil)
		if err := appendRefused(p, e); err != nil {
			t.Fatal(err)
		}
		var seq uint64
		pk, err := wire.DecodePacket(p.stamp(&seq))
		if err != nil {
			t.Fatal(err)
		}
		frames, _ := pk.Events(nil)
		got, err := decodeRefused(frames[0])
		if err != nil {
			t.Fatal(err)
		}
		if got.Code != e.Code || got.ErrorResponse.Error != e.Error || got.Owner != e.Owner || got.OwnerData != e.OwnerData || got.Rule != e.Rule ||
			len(got.Rules) != len(e.Rules) || got.RateLimited != e.RateLimited || (e.Shard == nil) != (got.Shard == nil) || (e.Shard != nil && *got.Shard != *e.Shard) {
			t.Fatalf("refusal %+v decoded as %+v", e, got.ErrorResponse)
		}
	}
	// A frame that does not fit one packet is refused, never cut.
	p := newPackets(1, nil)
	if err := appendIngestRequest(p, []dataapi.Event{{Payload: make([]byte, MaxEventSize+1)}}); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized event: %v", err)
	}
	p = newPackets(1, nil)
	if err := appendIngestRequest(p, []dataapi.Event{{Payload: make([]byte, MaxEventSize)}}); err != nil {
		t.Fatalf("largest event: %v", err)
	}
}
