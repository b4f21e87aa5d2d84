package wire

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func encodeControl(t *testing.T, m Control) []byte {
	t.Helper()
	b, err := m.AppendTo(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestControlRoundTrip(t *testing.T) {
	msgs := []Control{
		Subscribe{Channel: "orders", Token: []byte("tok")},
		Subscribe{Channel: "ünïcode"},
		Unsubscribe{Channel: "orders", Token: []byte{1, 2, 3}},
		Ack{Channel: "orders", Status: AckDenied, Seq: 1 << 40},
		WindowUpdate{StreamID: 9, Consumed: 1 << 33, Window: 65536},
	}
	for _, m := range msgs {
		b := encodeControl(t, m)
		if ControlKind(b[0]) != m.Kind() {
			t.Fatalf("%T: kind byte %d", m, b[0])
		}
		got, err := DecodeControl(b)
		if err != nil {
			t.Fatalf("%T: %v", m, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip: got %#v, want %#v", got, m)
		}
	}
}

// Net v0.9 "Channel decoder accepts trailing bytes on UNSUBSCRIBE/ACK":
// every control message must be the whole input.
func TestChannelDecoderAcceptsTrailingBytesOnUnsubscribeAck(t *testing.T) {
	msgs := []Control{
		Subscribe{Channel: "c", Token: []byte("t")},
		Unsubscribe{Channel: "c", Token: []byte("t")},
		Unsubscribe{Channel: "c"},
		Ack{Channel: "c", Status: AckOK, Seq: 5},
		WindowUpdate{StreamID: 1, Consumed: 2, Window: 3},
	}
	for _, m := range msgs {
		b := append(encodeControl(t, m), 0)
		if _, err := DecodeControl(b); !errors.Is(err, ErrTrailingBytes) {
			t.Errorf("%T with a trailing byte: err = %v, want ErrTrailingBytes", m, err)
		}
	}
}

func TestDecodeControlRejections(t *testing.T) {
	sub := encodeControl(t, Subscribe{Channel: "chan", Token: []byte("token")})
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShortControl},
		{"unknown kind", []byte{99, 1, 'c'}, ErrUnknownControl},
		{"truncated token", sub[:len(sub)-1], ErrShortControl},
		{"truncated channel", sub[:3], ErrShortControl},
		{"empty channel", []byte{byte(KindUnsubscribe), 0, 0, 0}, ErrBadChannelName},
		{"non-UTF-8 channel", []byte{byte(KindUnsubscribe), 1, 0xff, 0, 0}, ErrBadChannelName},
		{"token over limit", append([]byte{byte(KindSubscribe), 1, 'c', 0x01, 0x10}, make([]byte, 4097)...), ErrControlTooLarge},
		{"ack status zero", []byte{byte(KindAck), 1, 'c', 0, 0, 0, 0, 0, 0, 0, 0, 0}, ErrUnknownStatus},
		{"ack status unknown", []byte{byte(KindAck), 1, 'c', 9, 0, 0, 0, 0, 0, 0, 0, 0}, ErrUnknownStatus},
		{"ack truncated seq", []byte{byte(KindAck), 1, 'c', 1, 0, 0}, ErrShortControl},
		{"window truncated", []byte{byte(KindWindow), 0, 0, 0}, ErrShortControl},
	}
	for _, c := range cases {
		if _, err := DecodeControl(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
}

func TestControlEncodeRejectsOutOfRange(t *testing.T) {
	cases := []struct {
		m    Control
		want error
	}{
		{Subscribe{Channel: ""}, ErrBadChannelName},
		{Subscribe{Channel: strings.Repeat("x", MaxChannelName+1)}, ErrBadChannelName},
		{Unsubscribe{Channel: "c", Token: make([]byte, MaxControlToken+1)}, ErrControlTooLarge},
		{Ack{Channel: "c"}, ErrUnknownStatus},
	}
	for _, c := range cases {
		if _, err := c.m.AppendTo(nil); !errors.Is(err, c.want) {
			t.Errorf("%#v: err = %v, want %v", c.m, err, c.want)
		}
	}
	if b, err := (Subscribe{Channel: strings.Repeat("x", MaxChannelName), Token: make([]byte, MaxControlToken)}).AppendTo(nil); err != nil {
		t.Errorf("limits themselves must encode: %v", err)
	} else if _, err := DecodeControl(b); err != nil {
		t.Errorf("limits themselves must decode: %v", err)
	}
}

func TestControlInsidePacket(t *testing.T) {
	msg := encodeControl(t, Ack{Channel: "orders", Status: AckOK, Seq: 3})
	pkt, err := BuildPacket(nil, Header{Subprotocol: SubprotocolControl, ChannelHash: ChannelHash("orders")}, [][]byte{msg}, DefaultMaxPayload)
	if err != nil {
		t.Fatal(err)
	}
	p, err := DecodePacket(pkt)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := p.Events(nil)
	if err != nil || len(evs) != 1 || !bytes.Equal(evs[0], msg) {
		t.Fatalf("control message in packet: %v", err)
	}
	if m, err := DecodeControl(evs[0]); err != nil || m.(Ack).Seq != 3 {
		t.Fatalf("decoded %v, %v", m, err)
	}
}
