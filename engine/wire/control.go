package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// ControlKind tags a control message; it is the message's first byte.
type ControlKind uint8

// Control message kinds.
const (
	KindSubscribe   ControlKind = 1
	KindUnsubscribe ControlKind = 2
	KindAck         ControlKind = 3
	KindWindow      ControlKind = 4
)

const (
	// MaxChannelName is the longest channel name on the wire.
	MaxChannelName = 255
	// MaxControlToken bounds the permission token a subscribe or
	// unsubscribe carries (a delegation chain in identity's binary form
	// fits comfortably).
	MaxControlToken = 4096
)

// Control-message errors.
var (
	ErrShortControl    = errors.New("wire: control message truncated")
	ErrUnknownControl  = errors.New("wire: unknown control message kind")
	ErrTrailingBytes   = errors.New("wire: trailing bytes after control message")
	ErrBadChannelName  = errors.New("wire: channel name empty, too long or not UTF-8")
	ErrControlTooLarge = errors.New("wire: control token too large")
	ErrUnknownStatus   = errors.New("wire: unknown ack status")
)

// Control is one channel control message.
type Control interface {
	Kind() ControlKind
	// AppendTo appends the encoded message to dst. It fails only for
	// fields out of range (channel name, token size, status).
	AppendTo(dst []byte) ([]byte, error)
}

// Subscribe asks to receive a channel's events, presenting a permission
// token (identity's binary form; may be empty where auth is off).
type Subscribe struct {
	Channel string
	Token   []byte
}

// Unsubscribe asks to stop receiving a channel's events.
type Unsubscribe struct {
	Channel string
	Token   []byte
}

// AckStatus is the answer to a subscribe or unsubscribe.
type AckStatus uint8

// Ack statuses.
const (
	AckOK AckStatus = iota + 1
	AckDenied
	AckUnknownChannel

	ackStatusMax = AckUnknownChannel
)

// Ack answers a Subscribe or Unsubscribe for Channel. Seq is the channel's
// next sequence number when the answer was made, where the subscriber's
// stream starts.
type Ack struct {
	Channel string
	Status  AckStatus
	Seq     uint64
}

// WindowUpdate is a receiver's flow-control report for one stream: it has
// consumed Consumed bytes in total and will buffer Window more beyond that.
// See StreamWindow for how a sender applies it.
type WindowUpdate struct {
	StreamID uint64
	Consumed uint64
	Window   uint32
}

func (Subscribe) Kind() ControlKind    { return KindSubscribe }
func (Unsubscribe) Kind() ControlKind  { return KindUnsubscribe }
func (Ack) Kind() ControlKind          { return KindAck }
func (WindowUpdate) Kind() ControlKind { return KindWindow }

func (m Subscribe) AppendTo(dst []byte) ([]byte, error) {
	return appendChannelToken(dst, KindSubscribe, m.Channel, m.Token)
}

func (m Unsubscribe) AppendTo(dst []byte) ([]byte, error) {
	return appendChannelToken(dst, KindUnsubscribe, m.Channel, m.Token)
}

func (m Ack) AppendTo(dst []byte) ([]byte, error) {
	if m.Status == 0 || m.Status > ackStatusMax {
		return nil, fmt.Errorf("%w: %d", ErrUnknownStatus, m.Status)
	}
	dst, err := appendChannel(append(dst, byte(KindAck)), m.Channel)
	if err != nil {
		return nil, err
	}
	dst = append(dst, byte(m.Status))
	return binary.LittleEndian.AppendUint64(dst, m.Seq), nil
}

func (m WindowUpdate) AppendTo(dst []byte) ([]byte, error) {
	dst = append(dst, byte(KindWindow))
	dst = binary.LittleEndian.AppendUint64(dst, m.StreamID)
	dst = binary.LittleEndian.AppendUint64(dst, m.Consumed)
	return binary.LittleEndian.AppendUint32(dst, m.Window), nil
}

func validChannel(name string) bool {
	return len(name) > 0 && len(name) <= MaxChannelName && utf8.ValidString(name)
}

func appendChannel(dst []byte, name string) ([]byte, error) {
	if !validChannel(name) {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadChannelName, len(name))
	}
	dst = append(dst, byte(len(name)))
	return append(dst, name...), nil
}

func appendChannelToken(dst []byte, k ControlKind, channel string, token []byte) ([]byte, error) {
	if len(token) > MaxControlToken {
		return nil, fmt.Errorf("%w: %d bytes", ErrControlTooLarge, len(token))
	}
	dst, err := appendChannel(append(dst, byte(k)), channel)
	if err != nil {
		return nil, err
	}
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(token)))
	return append(dst, token...), nil
}

// DecodeControl parses one control message. The whole of b must be the
// message: anything after it is ErrTrailingBytes. Token bytes alias b.
func DecodeControl(b []byte) (Control, error) {
	if len(b) == 0 {
		return nil, ErrShortControl
	}
	c := cursor{b: b[1:]}
	var m Control
	switch ControlKind(b[0]) {
	case KindSubscribe:
		ch, tok := c.channel(), c.token()
		m = Subscribe{Channel: ch, Token: tok}
	case KindUnsubscribe:
		ch, tok := c.channel(), c.token()
		m = Unsubscribe{Channel: ch, Token: tok}
	case KindAck:
		ch := c.channel()
		st := AckStatus(c.u8())
		seq := c.u64()
		if c.err == nil && (st == 0 || st > ackStatusMax) {
			c.err = fmt.Errorf("%w: %d", ErrUnknownStatus, st)
		}
		m = Ack{Channel: ch, Status: st, Seq: seq}
	case KindWindow:
		m = WindowUpdate{StreamID: c.u64(), Consumed: c.u64(), Window: c.u32()}
	default:
		return nil, fmt.Errorf("%w: %d", ErrUnknownControl, b[0])
	}
	if c.err != nil {
		return nil, c.err
	}
	if len(c.b) != 0 {
		return nil, fmt.Errorf("%w: %d after kind %d", ErrTrailingBytes, len(c.b), b[0])
	}
	return m, nil
}

// cursor reads fields, remembering the first error so decoders stay flat.
type cursor struct {
	b   []byte
	err error
}

func (c *cursor) take(n int) []byte {
	if c.err != nil {
		return nil
	}
	if len(c.b) < n {
		c.err = fmt.Errorf("%w: need %d bytes, have %d", ErrShortControl, n, len(c.b))
		return nil
	}
	out := c.b[:n:n]
	c.b = c.b[n:]
	return out
}

func (c *cursor) u8() uint8 {
	if b := c.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (c *cursor) u32() uint32 {
	if b := c.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (c *cursor) u64() uint64 {
	if b := c.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (c *cursor) channel() string {
	n := int(c.u8())
	name := c.take(n)
	if c.err == nil && !validChannel(string(name)) {
		c.err = fmt.Errorf("%w: %d bytes", ErrBadChannelName, n)
	}
	return string(name)
}

func (c *cursor) token() []byte {
	n := int(c.u16())
	if c.err == nil && n > MaxControlToken {
		c.err = fmt.Errorf("%w: %d bytes", ErrControlTooLarge, n)
		return nil
	}
	t := c.take(n)
	if len(t) == 0 {
		return nil
	}
	return t
}

func (c *cursor) u16() uint16 {
	if b := c.take(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}
