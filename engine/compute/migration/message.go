package migration

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/purplerain/mesh-operator/engine/compute"
)

// NodeID names a node (its member name in the topology).
type NodeID string

// MaxChunk is the largest snapshot chunk payload a message may carry, in
// bytes, so a chunk fits a single transport packet with its header.
const MaxChunk = 7000

// Decoder bounds; a message over them is refused rather than allocated.
const (
	maxIDLen     = 1024
	maxDetailLen = 4096
	// MaxEventsBytes bounds the encoded size of one BufferedEvents message.
	MaxEventsBytes = 4 << 20
	// maxTotalChunks bounds a snapshot at about 7 GB.
	maxTotalChunks = 1 << 20
)

// Message is one migration message. Every message names its daemon.
type Message interface {
	DaemonID() string
	tag() byte
}

// TakeSnapshot asks the source node to migrate Daemon to Target.
type TakeSnapshot struct {
	Daemon string
	Target NodeID
}

// SnapshotChunk carries bytes [Index*MaxChunk, ...) of an encoded
// compute.Snapshot. Chunks are sent in order; Index < Total.
type SnapshotChunk struct {
	Daemon string
	Index  uint32
	Total  uint32
	Data   []byte
}

// RestoreComplete is the target's reply to the last chunk: the daemon is
// restored and expects seq Next.
type RestoreComplete struct {
	Daemon string
	Next   uint64
}

// BufferedEvents carries captured events for replay on the target, in seq
// order. An empty batch asks the target to retry its pending drain.
type BufferedEvents struct {
	Daemon string
	Events []compute.Event
}

// ReplayComplete is the target's reply to BufferedEvents and Cutover: the
// cursor it has replayed to.
type ReplayComplete struct {
	Daemon    string
	Next      uint64
	Exhausted bool
}

// Cutover tells the target the source is fenced at cursor (Next,
// Exhausted): the target must replay exactly up to it.
type Cutover struct {
	Daemon    string
	Next      uint64
	Exhausted bool
}

// Activate makes the target authoritative for Daemon.
type Activate struct{ Daemon string }

// ActivateAck confirms activation at cursor Next.
type ActivateAck struct {
	Daemon    string
	Next      uint64
	Exhausted bool
}

// Cleanup tells the target the source released the daemon; the target
// forgets its migration record.
type Cleanup struct{ Daemon string }

// Failed reports (as a reply) or orders (as a request, the abort) a failed
// migration.
type Failed struct {
	Daemon   string
	Reason   Reason
	Attempts uint8
	Detail   string
}

const (
	tagTakeSnapshot byte = iota + 1
	tagSnapshotChunk
	tagRestoreComplete
	tagBufferedEvents
	tagReplayComplete
	tagCutover
	tagActivate
	tagActivateAck
	tagCleanup
	tagFailed
)

func (m *TakeSnapshot) DaemonID() string    { return m.Daemon }
func (m *SnapshotChunk) DaemonID() string   { return m.Daemon }
func (m *RestoreComplete) DaemonID() string { return m.Daemon }
func (m *BufferedEvents) DaemonID() string  { return m.Daemon }
func (m *ReplayComplete) DaemonID() string  { return m.Daemon }
func (m *Cutover) DaemonID() string         { return m.Daemon }
func (m *Activate) DaemonID() string        { return m.Daemon }
func (m *ActivateAck) DaemonID() string     { return m.Daemon }
func (m *Cleanup) DaemonID() string         { return m.Daemon }
func (m *Failed) DaemonID() string          { return m.Daemon }

func (*TakeSnapshot) tag() byte    { return tagTakeSnapshot }
func (*SnapshotChunk) tag() byte   { return tagSnapshotChunk }
func (*RestoreComplete) tag() byte { return tagRestoreComplete }
func (*BufferedEvents) tag() byte  { return tagBufferedEvents }
func (*ReplayComplete) tag() byte  { return tagReplayComplete }
func (*Cutover) tag() byte         { return tagCutover }
func (*Activate) tag() byte        { return tagActivate }
func (*ActivateAck) tag() byte     { return tagActivateAck }
func (*Cleanup) tag() byte         { return tagCleanup }
func (*Failed) tag() byte          { return tagFailed }

// ErrMalformed is returned by Decode (and Encode for out-of-bounds fields).
var ErrMalformed = errors.New("migration: malformed message")

// Encode serializes m: a tag byte, the daemon id, then the fields.
func Encode(m Message) ([]byte, error) {
	if len(m.DaemonID()) > maxIDLen {
		return nil, fmt.Errorf("%w: daemon id of %d bytes", ErrMalformed, len(m.DaemonID()))
	}
	b := make([]byte, 0, 32+len(m.DaemonID()))
	b = append(b, m.tag())
	b = appendStr(b, m.DaemonID())
	switch m := m.(type) {
	case *TakeSnapshot:
		if len(m.Target) > maxIDLen {
			return nil, fmt.Errorf("%w: target id of %d bytes", ErrMalformed, len(m.Target))
		}
		b = appendStr(b, string(m.Target))
	case *SnapshotChunk:
		if len(m.Data) > MaxChunk || m.Total == 0 || m.Index >= m.Total || m.Total > maxTotalChunks {
			return nil, fmt.Errorf("%w: chunk %d/%d of %d bytes", ErrMalformed, m.Index, m.Total, len(m.Data))
		}
		b = binary.LittleEndian.AppendUint32(b, m.Index)
		b = binary.LittleEndian.AppendUint32(b, m.Total)
		b = appendBytes(b, m.Data)
	case *RestoreComplete:
		b = binary.LittleEndian.AppendUint64(b, m.Next)
	case *BufferedEvents:
		b = binary.AppendUvarint(b, uint64(len(m.Events)))
		for _, ev := range m.Events {
			b = binary.LittleEndian.AppendUint64(b, ev.Seq)
			b = binary.LittleEndian.AppendUint64(b, uint64(ev.Time))
			b = appendBytes(b, ev.Key)
			b = appendBytes(b, ev.Payload)
		}
		if len(b) > MaxEventsBytes {
			return nil, fmt.Errorf("%w: events message of %d bytes", ErrMalformed, len(b))
		}
	case *ReplayComplete:
		b = appendCursor(b, m.Next, m.Exhausted)
	case *Cutover:
		b = appendCursor(b, m.Next, m.Exhausted)
	case *Activate, *Cleanup:
	case *ActivateAck:
		b = appendCursor(b, m.Next, m.Exhausted)
	case *Failed:
		if len(m.Detail) > maxDetailLen {
			m2 := *m
			m2.Detail = m.Detail[:maxDetailLen]
			m = &m2
		}
		b = binary.LittleEndian.AppendUint16(b, uint16(m.Reason))
		b = append(b, m.Attempts)
		b = appendStr(b, m.Detail)
	default:
		return nil, fmt.Errorf("%w: unknown message type %T", ErrMalformed, m)
	}
	return b, nil
}

// EncodedEventSize is the number of bytes ev adds to a BufferedEvents
// message, for batching under MaxEventsBytes.
func EncodedEventSize(ev compute.Event) int {
	return 16 + 2*binary.MaxVarintLen32 + len(ev.Key) + len(ev.Payload)
}

// Decode parses one message. It never panics and bounds every allocation
// by the input length. Byte fields alias b.
func Decode(b []byte) (Message, error) {
	d := decoder{b: b}
	tag := d.byte()
	daemon := d.str(maxIDLen)
	var m Message
	switch tag {
	case tagTakeSnapshot:
		m = &TakeSnapshot{Daemon: daemon, Target: NodeID(d.str(maxIDLen))}
	case tagSnapshotChunk:
		c := &SnapshotChunk{Daemon: daemon, Index: d.u32(), Total: d.u32(), Data: d.bytes(MaxChunk)}
		if d.err == nil && (c.Total == 0 || c.Index >= c.Total || c.Total > maxTotalChunks) {
			d.fail("chunk %d of %d", c.Index, c.Total)
		}
		m = c
	case tagRestoreComplete:
		m = &RestoreComplete{Daemon: daemon, Next: d.u64()}
	case tagBufferedEvents:
		n := d.uvarint()
		// Each event takes at least 18 bytes; refuse counts the input cannot hold.
		if d.err == nil && n > uint64(len(d.b))/18 {
			d.fail("%d events in %d bytes", n, len(d.b))
		}
		be := &BufferedEvents{Daemon: daemon}
		if d.err == nil && n > 0 {
			be.Events = make([]compute.Event, 0, n)
		}
		for i := uint64(0); i < n && d.err == nil; i++ {
			ev := compute.Event{Seq: d.u64(), Time: int64(d.u64())}
			ev.Key = d.bytes(len(d.b))
			ev.Payload = d.bytes(len(d.b))
			be.Events = append(be.Events, ev)
		}
		m = be
	case tagReplayComplete:
		next, ex := d.cursor()
		m = &ReplayComplete{Daemon: daemon, Next: next, Exhausted: ex}
	case tagCutover:
		next, ex := d.cursor()
		m = &Cutover{Daemon: daemon, Next: next, Exhausted: ex}
	case tagActivate:
		m = &Activate{Daemon: daemon}
	case tagActivateAck:
		next, ex := d.cursor()
		m = &ActivateAck{Daemon: daemon, Next: next, Exhausted: ex}
	case tagCleanup:
		m = &Cleanup{Daemon: daemon}
	case tagFailed:
		f := &Failed{Daemon: daemon, Reason: Reason(d.u16()), Attempts: d.byte(), Detail: d.str(maxDetailLen)}
		if d.err == nil && !f.Reason.valid() {
			d.fail("unknown reason %d", f.Reason)
		}
		m = f
	default:
		if d.err == nil {
			d.fail("unknown tag %d", tag)
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return m, nil
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendCursor(b []byte, next uint64, exhausted bool) []byte {
	b = binary.LittleEndian.AppendUint64(b, next)
	if exhausted {
		return append(b, 1)
	}
	return append(b, 0)
}

// decoder reads fields until the first error, after which every read
// returns zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.fail("truncated: need %d bytes, have %d", n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if v := d.take(2); v != nil {
		return binary.LittleEndian.Uint16(v)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if v := d.take(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if v := d.take(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(max int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(max) {
		d.fail("field of %d bytes exceeds %d", n, max)
		return nil
	}
	if n == 0 {
		return nil
	}
	return d.take(int(n))
}

func (d *decoder) str(max int) string { return string(d.bytes(max)) }

func (d *decoder) cursor() (uint64, bool) {
	next := d.u64()
	flag := d.byte()
	if d.err == nil && flag > 1 {
		d.fail("bad cursor flag %d", flag)
	}
	if d.err == nil && flag == 1 && next != ^uint64(0) {
		d.fail("exhausted cursor below max")
	}
	return next, flag == 1
}
