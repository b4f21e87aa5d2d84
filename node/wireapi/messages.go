package wireapi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"

	"github.com/purplerain/mesh-operator/engine/wire"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/refusal"
)

// Refusal codes on the wire, one per dataapi error code.
const (
	codeBadRequest uint8 = iota + 1
	codeNotOwner
	codeShardMoving
	codeLeaseExpired
	codeNoTopology
	codeBackpressure
	codeBehindRetention
	codeRuleRejected
	codeRejected
	codeInternal
	codeMax = codeInternal
)

var codeNames = [...]string{
	codeBadRequest:      dataapi.CodeBadRequest,
	codeNotOwner:        dataapi.CodeNotOwner,
	codeShardMoving:     dataapi.CodeShardMoving,
	codeLeaseExpired:    dataapi.CodeLeaseExpired,
	codeNoTopology:      dataapi.CodeNoTopology,
	codeBackpressure:    dataapi.CodeBackpressure,
	codeBehindRetention: dataapi.CodeBehindRetention,
	codeRuleRejected:    dataapi.CodeRuleRejected,
	codeRejected:        dataapi.CodeRejected,
	codeInternal:        dataapi.CodeInternal,
}

func codeOf(name string) uint8 {
	for c, n := range codeNames {
		if n == name && c != 0 {
			return uint8(c)
		}
	}
	return codeInternal
}

// RefusedError is a node's refusal of one request, with the same codes
// and fields as the HTTP data API's error body.
type RefusedError struct {
	dataapi.ErrorResponse
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("wireapi: %s: %s", e.Code, e.ErrorResponse.Error)
}

// Status is the HTTP status the HTTP data API answers the same refusal
// with, so callers can treat both transports alike.
func (e *RefusedError) Status() int {
	switch e.Code {
	case dataapi.CodeBadRequest:
		return http.StatusBadRequest
	case dataapi.CodeNotOwner:
		return http.StatusMisdirectedRequest
	case dataapi.CodeShardMoving, dataapi.CodeLeaseExpired, dataapi.CodeNoTopology, dataapi.CodeBackpressure:
		return http.StatusServiceUnavailable
	case dataapi.CodeBehindRetention:
		return http.StatusGone
	case dataapi.CodeRuleRejected:
		if e.RateLimited {
			return http.StatusTooManyRequests
		}
		return http.StatusUnprocessableEntity
	case dataapi.CodeRejected:
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}

// Unwrap exposes the refusal as the node's typed error where one exists
// (refusal.ErrShardMoving, *refusal.NotOwnerError, …), so callers branch
// with errors.Is and errors.As as they would inside the node.
func (e *RefusedError) Unwrap() error {
	switch e.Code {
	case dataapi.CodeNotOwner:
		ne := &refusal.NotOwnerError{Owner: e.Owner, Data: e.OwnerData}
		if e.Shard != nil {
			ne.Shard = *e.Shard
		}
		return ne
	case dataapi.CodeShardMoving:
		return refusal.ErrShardMoving
	case dataapi.CodeLeaseExpired:
		return refusal.ErrLeaseExpired
	case dataapi.CodeNoTopology:
		return refusal.ErrNoTopology
	case dataapi.CodeBackpressure:
		return refusal.ErrBackpressure
	case dataapi.CodeBehindRetention:
		return refusal.ErrBehindRetention
	case dataapi.CodeRuleRejected:
		return &refusal.RuleRejectedError{Rule: e.Rule, Rules: e.Rules, RateLimited: e.RateLimited}
	case dataapi.CodeRejected:
		return dataapi.ErrForbidden
	}
	return nil
}

// refusalOf maps a backend error to its refusal body, as the HTTP data API
// does. internal reports an error the node did not expect (to be logged).
func refusalOf(err error) (body dataapi.ErrorResponse, internal bool) {
	body = dataapi.ErrorResponse{Error: err.Error()}
	var notOwner *refusal.NotOwnerError
	var ruleErr *refusal.RuleRejectedError
	switch {
	case errors.As(err, &ruleErr):
		body.Code = dataapi.CodeRuleRejected
		body.Rule, body.Rules, body.RateLimited = ruleErr.Rule, ruleErr.Rules, ruleErr.RateLimited
	case errors.As(err, &notOwner):
		shard := notOwner.Shard
		body.Code, body.Shard, body.Owner, body.OwnerData = dataapi.CodeNotOwner, &shard, notOwner.Owner, notOwner.Data
	case errors.Is(err, refusal.ErrShardMoving):
		body.Code = dataapi.CodeShardMoving
	case errors.Is(err, refusal.ErrLeaseExpired):
		body.Code = dataapi.CodeLeaseExpired
	case errors.Is(err, refusal.ErrNoTopology):
		body.Code = dataapi.CodeNoTopology
	case errors.Is(err, refusal.ErrBackpressure):
		body.Code = dataapi.CodeBackpressure
	case errors.Is(err, refusal.ErrBehindRetention):
		body.Code = dataapi.CodeBehindRetention
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		body.Code = dataapi.CodeInternal
	default:
		body.Code, internal = dataapi.CodeInternal, true
	}
	return body, internal
}

// refused frame: kind | code u8 | flags u8 (1 has shard, 2 rate limited) |
// shard u16 | error | owner | ownerData | rule | nRules u16 | rules…
// (strings are u16 length + UTF-8).

const (
	refusedHasShard    = 1
	refusedRateLimited = 2
)

func appendRefused(p *packets, e dataapi.ErrorResponse) error {
	if len(e.Rules) > 0xffff {
		e.Rules = e.Rules[:0xffff]
	}
	n := 1 + 1 + 1 + 2 + strSize(e.Error) + strSize(e.Owner) + strSize(e.OwnerData) + strSize(e.Rule) + 2
	for _, r := range e.Rules {
		n += strSize(r)
	}
	if n > MaxFrame { // an absurd error text; keep the code, drop the text
		cut := func(s string) string { return s[:min(len(s), 1024)] }
		e.Error, e.Owner, e.OwnerData, e.Rule, e.Rules = cut(e.Error), cut(e.Owner), cut(e.OwnerData), cut(e.Rule), nil
		return appendRefused(p, e)
	}
	if err := p.reserve(n); err != nil {
		return err
	}
	var flags uint8
	var shard uint16
	if e.Shard != nil {
		flags |= refusedHasShard
		shard = *e.Shard
	}
	if e.RateLimited {
		flags |= refusedRateLimited
	}
	b := append(p.buf, byte(kindRefused), codeOf(e.Code), flags)
	b = binary.LittleEndian.AppendUint16(b, shard)
	for _, s := range []string{e.Error, e.Owner, e.OwnerData, e.Rule} {
		b = appendStr(b, s)
	}
	b = binary.LittleEndian.AppendUint16(b, uint16(len(e.Rules)))
	for _, r := range e.Rules {
		b = appendStr(b, r)
	}
	p.buf = b
	return nil
}

func decodeRefused(f []byte) (*RefusedError, error) {
	r := reader{b: f}
	if msgKind(r.u8()) != kindRefused {
		return nil, fmt.Errorf("%w: not a refusal", ErrProtocol)
	}
	code := r.u8()
	flags := r.u8()
	shard := r.u16()
	e := &RefusedError{}
	e.ErrorResponse.Error, e.Owner, e.OwnerData, e.Rule = r.str(), r.str(), r.str(), r.str()
	n := int(r.u16())
	for i := 0; i < n && !r.bad; i++ {
		e.Rules = append(e.Rules, r.str())
	}
	if err := r.done("refusal"); err != nil {
		return nil, err
	}
	if code == 0 || code > codeMax || flags&^(refusedHasShard|refusedRateLimited) != 0 {
		return nil, fmt.Errorf("%w: refusal code %d flags %#x", ErrProtocol, code, flags)
	}
	e.Code = codeNames[code]
	if flags&refusedHasShard != 0 {
		e.Shard = &shard
	}
	e.RateLimited = flags&refusedRateLimited != 0
	return e, nil
}

// poll request frame: kind | limit u32 | cursor (u16 length + bytes).

func appendPollRequest(p *packets, req dataapi.PollRequest) error {
	if err := p.reserve(1 + 4 + strSize(req.Cursor)); err != nil {
		return err
	}
	b := append(p.buf, byte(kindPoll))
	b = binary.LittleEndian.AppendUint32(b, uint32(req.Limit))
	p.buf = appendStr(b, req.Cursor)
	return nil
}

func decodePollRequest(f []byte) (dataapi.PollRequest, error) {
	r := reader{b: f[1:]}
	req := dataapi.PollRequest{Limit: int(r.u32()), Cursor: r.str()}
	return req, r.done("poll request")
}

// ingest OK frame: kind | n u32 | shard u16 × n.

func appendIngestOK(p *packets, acks []dataapi.Ack) error {
	if err := p.reserve(1 + 4 + 2*len(acks)); err != nil {
		return err
	}
	b := append(p.buf, byte(kindIngestOK))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(acks)))
	for _, a := range acks {
		b = binary.LittleEndian.AppendUint16(b, a.Shard)
	}
	p.buf = b
	return nil
}

func decodeIngestOK(f []byte) ([]dataapi.Ack, error) {
	r := reader{b: f[1:]}
	n := int(r.u32())
	if n > len(r.b)/2 {
		return nil, fmt.Errorf("%w: ingest answer counts %d acks in %d bytes", ErrProtocol, n, len(r.b))
	}
	acks := make([]dataapi.Ack, n)
	for i := range acks {
		acks[i].Shard = r.u16()
	}
	return acks, r.done("ingest answer")
}

// poll OK first frame: kind | flags u8 (1 hasMore, 2 truncated) | cursor |
// nStalled u16 | stalled shard u16 × n; then one frame per event.

const (
	pollHasMore   = 1
	pollTruncated = 2
)

func appendPollOK(p *packets, resp dataapi.PollResponse) error {
	stalled := resp.StalledShards
	if len(stalled) > 0xffff {
		stalled = stalled[:0xffff]
	}
	if err := p.reserve(1 + 1 + strSize(resp.Cursor) + 2 + 2*len(stalled)); err != nil {
		return err
	}
	var flags uint8
	if resp.HasMore {
		flags |= pollHasMore
	}
	if resp.TruncatedAtPerShardCap {
		flags |= pollTruncated
	}
	b := append(p.buf, byte(kindPollOK), flags)
	b = appendStr(b, resp.Cursor)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(stalled)))
	for _, s := range stalled {
		b = binary.LittleEndian.AppendUint16(b, s)
	}
	p.buf = b
	for _, e := range resp.Events {
		if n := storedEventHeader + len(e.Payload); n > MaxFrame {
			if len(e.Payload) > MaxEventSize {
				return fmt.Errorf("%w: %w", ErrFrameTooLarge, &wire.OversizeError{Size: len(e.Payload), Max: MaxEventSize})
			}
			f := make([]byte, 0, n)
			f = binary.LittleEndian.AppendUint16(f, e.Shard)
			f = binary.LittleEndian.AppendUint64(f, e.Seq)
			f = binary.LittleEndian.AppendUint64(f, uint64(e.Time))
			if err := p.fragment(append(f, e.Payload...)); err != nil {
				return err
			}
			continue
		}
		if err := p.reserve(storedEventHeader + len(e.Payload)); err != nil {
			return err
		}
		b := binary.LittleEndian.AppendUint16(p.buf, e.Shard)
		b = binary.LittleEndian.AppendUint64(b, e.Seq)
		b = binary.LittleEndian.AppendUint64(b, uint64(e.Time))
		p.buf = append(b, e.Payload...)
	}
	return nil
}

func decodePollOKHead(f []byte) (dataapi.PollResponse, error) {
	r := reader{b: f[1:]}
	flags := r.u8()
	resp := dataapi.PollResponse{Cursor: r.str()}
	n := int(r.u16())
	if n > len(r.b)/2 {
		return resp, fmt.Errorf("%w: poll answer counts %d stalled shards in %d bytes", ErrProtocol, n, len(r.b))
	}
	for range n {
		resp.StalledShards = append(resp.StalledShards, r.u16())
	}
	if err := r.done("poll answer"); err != nil {
		return resp, err
	}
	if flags&^(pollHasMore|pollTruncated) != 0 {
		return resp, fmt.Errorf("%w: poll answer flags %#x", ErrProtocol, flags)
	}
	resp.HasMore, resp.TruncatedAtPerShardCap = flags&pollHasMore != 0, flags&pollTruncated != 0
	return resp, nil
}

// appendIngestRequest lays out an ingest request: the head frame, then one
// frame per event.
func appendIngestRequest(p *packets, events []dataapi.Event) error {
	if err := p.reserve(1); err != nil {
		return err
	}
	p.buf = append(p.buf, byte(kindIngest))
	for i, e := range events {
		if len(e.Key) > 0xffff {
			return fmt.Errorf("%w: event %d key is %d bytes", ErrFrameTooLarge, i, len(e.Key))
		}
		if n := len(e.Key) + len(e.Payload); n > MaxEventSize {
			return fmt.Errorf("event %d: %w: %w", i, ErrFrameTooLarge, &wire.OversizeError{Size: n, Max: MaxEventSize})
		}
		if n := eventFrameSize(e); n > MaxFrame {
			f := make([]byte, 0, n)
			f = binary.LittleEndian.AppendUint16(f, uint16(len(e.Key)))
			f = append(f, e.Key...)
			if err := p.fragment(append(f, e.Payload...)); err != nil {
				return fmt.Errorf("event %d: %w", i, err)
			}
			continue
		}
		if err := p.reserve(eventFrameSize(e)); err != nil {
			return fmt.Errorf("event %d: %w", i, err)
		}
		b := binary.LittleEndian.AppendUint16(p.buf, uint16(len(e.Key)))
		b = append(b, e.Key...)
		p.buf = append(b, e.Payload...)
	}
	return nil
}

// auth request frame: kind | tokenLen u16 | token (identity binary form).

func appendAuth(p *packets, token []byte) error {
	if len(token) > wire.MaxControlToken {
		return fmt.Errorf("wireapi: token of %d bytes exceeds %d", len(token), wire.MaxControlToken)
	}
	if err := p.reserve(1 + 2 + len(token)); err != nil {
		return err
	}
	b := append(p.buf, byte(kindAuth))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(token)))
	p.buf = append(b, token...)
	return nil
}

func appendAuthOK(p *packets) error {
	if err := p.reserve(1); err != nil {
		return err
	}
	p.buf = append(p.buf, byte(kindAuthOK))
	return nil
}
