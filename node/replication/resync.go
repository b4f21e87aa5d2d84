package replication

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/purplerain/mesh-operator/engine/wire"
)

// Resync: the messages that let a follower the owner's retention left
// behind start over from the owner's log head instead of stopping with a
// *LaggedError. They are decoded here, before decodeMessage sees a frame,
// so the base protocol (frame.go) is unchanged:
//
//	resync-subscribe (follower→owner, alone in the first packet)
//	           0x20 | the body of subscribe
//	resync     (owner→follower, alone in a packet; answers a
//	           resync-subscribe whose from the owner pruned)
//	           0x21 | shard u16 | ownerEpoch u64 | first u64 | ownerNext u64 | daemons u16
//	chunk      (owner→follower, after resync, daemons > 0)
//	           0x22 | index u16 | total u32 | offset u32 | bytes (the rest of the frame)
//
// A follower that has been refused as lagged (FollowerOptions.Resync set)
// subscribes with resync-subscribe. If the owner still retains its next
// seq it answers accept as for subscribe. Otherwise it answers resync:
// first is the owner's first retained seq (its log head), and daemons
// snapshots follow, each an engine/compute Snapshot encoding cut in chunks
// sent in order (index 0.., offset 0..total); then the stream goes on
// exactly as after an accept with from = first. The follower resets its
// log to first (redex ResetTo) once the snapshots have arrived, hands them
// to FollowerOptions.Resync, and appends the entries that follow.
//
// The daemon snapshots are taken before the owner reads first, so each
// covers a prefix of the owner's log at least as long as the entries the
// follower is missing: a snapshot's cursor is at or above first unless
// that daemon was itself behind retention (its copy then stays behind on
// the follower too, as it does on the owner).
const (
	kindResyncSubscribe msgKind = 0x20
	kindResync          msgKind = 0x21
	kindChunk           msgKind = 0x22
)

const (
	// maxResyncDaemons bounds the snapshots one resync carries.
	maxResyncDaemons = 4096
	// MaxDaemonSnapshot bounds one daemon snapshot a resync carries; the
	// owner leaves larger ones out (that copy then stays behind on the
	// follower) and the follower refuses them.
	MaxDaemonSnapshot = 256 << 20
	// maxResyncBytes bounds all the snapshots of one resync together, so
	// a follower never holds more than this for an owner's answer.
	maxResyncBytes = 1 << 30
	chunkHeader    = 1 + 2 + 4 + 4
)

// DaemonSnapshotter is implemented by a LogSource whose node keeps daemon
// state over its shard logs: a resync sends the follower the snapshots it
// returns (each an encoded engine/compute Snapshot, taken now) with the
// log head. A source without it resyncs logs only.
type DaemonSnapshotter interface {
	DaemonSnapshots(shard uint16) ([][]byte, error)
}

// Resync is what a follower learned when its owner resynced it: its log
// was reset to start at First, and Daemons are the owner's daemon
// snapshots for the shard (encoded engine/compute Snapshots).
type Resync struct {
	Shard     uint16
	First     uint64
	OwnerNext uint64
	Daemons   [][]byte
	// Diverged: the follower's log was not a prefix of the owner's
	// (divergence.go), so its daemon copies hold state from entries the
	// owner never had, and its stored snapshots may be ahead of the
	// owner's; a lagged follower's are only behind.
	Diverged bool
}

type resyncMsg struct {
	Shard     uint16
	Epoch     uint64
	First     uint64
	OwnerNext uint64
	Daemons   uint16
}

type chunkMsg struct {
	Index  uint16
	Total  uint32
	Offset uint32
	Data   []byte // aliases the packet
}

func appendResyncSubscribe(dst []byte, m subscribeMsg) []byte {
	at := len(dst)
	dst = appendSubscribe(dst, m)
	dst[at] = byte(kindResyncSubscribe)
	return dst
}

// decodeResyncSubscribe parses a resync-subscribe: a subscribe body behind
// another kind byte.
func decodeResyncSubscribe(b []byte) (subscribeMsg, error) {
	if len(b) == 0 || msgKind(b[0]) != kindResyncSubscribe {
		return subscribeMsg{}, fmt.Errorf("%w: not a resync-subscribe", ErrProtocol)
	}
	c := make([]byte, len(b))
	copy(c, b)
	c[0] = byte(kindSubscribe)
	m, err := decodeMessage(c)
	if err != nil {
		return subscribeMsg{}, err
	}
	return m.subscribe, nil
}

func appendResync(dst []byte, m resyncMsg) []byte {
	dst = append(dst, byte(kindResync))
	dst = binary.LittleEndian.AppendUint16(dst, m.Shard)
	dst = binary.LittleEndian.AppendUint64(dst, m.Epoch)
	dst = binary.LittleEndian.AppendUint64(dst, m.First)
	dst = binary.LittleEndian.AppendUint64(dst, m.OwnerNext)
	return binary.LittleEndian.AppendUint16(dst, m.Daemons)
}

func decodeResync(b []byte) (resyncMsg, error) {
	if len(b) == 0 || msgKind(b[0]) != kindResync {
		return resyncMsg{}, fmt.Errorf("%w: not a resync message", ErrProtocol)
	}
	c := cur{b: b[1:]}
	m := resyncMsg{Shard: c.u16(), Epoch: c.u64(), First: c.u64(), OwnerNext: c.u64(), Daemons: c.u16()}
	switch {
	case c.err != nil:
		return resyncMsg{}, c.err
	case len(c.b) != 0:
		return resyncMsg{}, fmt.Errorf("%w: %d trailing bytes after resync", ErrProtocol, len(c.b))
	case m.First > m.OwnerNext:
		return resyncMsg{}, fmt.Errorf("%w: resync head %d beyond the owner's next seq %d", ErrProtocol, m.First, m.OwnerNext)
	case m.Daemons > maxResyncDaemons:
		return resyncMsg{}, fmt.Errorf("%w: resync with %d daemon snapshots", ErrProtocol, m.Daemons)
	}
	return m, nil
}

func appendChunk(dst []byte, m chunkMsg) []byte {
	dst = append(dst, byte(kindChunk))
	dst = binary.LittleEndian.AppendUint16(dst, m.Index)
	dst = binary.LittleEndian.AppendUint32(dst, m.Total)
	dst = binary.LittleEndian.AppendUint32(dst, m.Offset)
	return append(dst, m.Data...)
}

func decodeChunk(b []byte) (chunkMsg, error) {
	if len(b) == 0 {
		return chunkMsg{}, ErrShortMessage
	}
	if msgKind(b[0]) != kindChunk {
		return chunkMsg{}, fmt.Errorf("%w: message kind %d where a snapshot chunk was due", ErrProtocol, b[0])
	}
	c := cur{b: b[1:]}
	m := chunkMsg{Index: c.u16(), Total: c.u32(), Offset: c.u32()}
	if c.err != nil {
		return chunkMsg{}, c.err
	}
	m.Data = c.b
	switch {
	case m.Total == 0 || m.Total > MaxDaemonSnapshot:
		return chunkMsg{}, fmt.Errorf("%w: daemon snapshot of %d bytes", ErrProtocol, m.Total)
	case uint64(m.Offset)+uint64(len(m.Data)) > uint64(m.Total):
		return chunkMsg{}, fmt.Errorf("%w: chunk [%d, %d) beyond the snapshot's %d bytes", ErrProtocol, m.Offset, uint64(m.Offset)+uint64(len(m.Data)), m.Total)
	case len(m.Data) == 0:
		return chunkMsg{}, fmt.Errorf("%w: empty snapshot chunk", ErrProtocol)
	}
	return m, nil
}

// sendSnapshots writes snaps as chunk messages, packed into packets, and
// flushes. snaps are already bounded by MaxDaemonSnapshot.
// deadline runs before each packet is written.
func sendSnapshots(pw *packetWriter, snaps [][]byte, deadline func()) error {
	room := pw.maxPayload - wire.FrameLenSize - chunkHeader
	for i, s := range snaps {
		for off := 0; off < len(s); {
			n := min(room, len(s)-off)
			if !pw.fits(chunkHeader + n) {
				deadline()
				if err := pw.endPacket(); err != nil {
					return err
				}
			}
			pw.msg = appendChunk(pw.msg[:0], chunkMsg{Index: uint16(i), Total: uint32(len(s)), Offset: uint32(off), Data: s[off : off+n]})
			pw.add(pw.msg)
			off += n
		}
	}
	deadline()
	if err := pw.endPacket(); err != nil {
		return err
	}
	return pw.w.Flush()
}

// snapshotAssembler collects the chunks of a resync's daemon snapshots,
// which must arrive in order. Memory grows with the bytes received, not
// with the sizes the owner announces: a chunk claiming a 256 MiB snapshot
// with one byte of data costs one byte, so an owner (or whoever answers on
// its address) cannot make the follower reserve maxResyncBytes with a few
// small packets.
type snapshotAssembler struct {
	want   int
	snaps  [][]byte
	totals []int // announced size of each snapshot in snaps
	total  int64 // bytes announced so far
}

func (a *snapshotAssembler) done() bool {
	k := len(a.snaps)
	return k == a.want && (a.want == 0 || len(a.snaps[k-1]) == a.totals[k-1])
}

func (a *snapshotAssembler) add(m chunkMsg) error {
	k := len(a.snaps)
	if k > 0 && len(a.snaps[k-1]) < a.totals[k-1] {
		// The current snapshot continues.
		cur, total := a.snaps[k-1], a.totals[k-1]
		if int(m.Index) != k-1 || int(m.Total) != total || int(m.Offset) != len(cur) {
			return fmt.Errorf("%w: chunk %d@%d/%d out of order (snapshot %d at %d of %d)", ErrProtocol, m.Index, m.Offset, m.Total, k-1, len(cur), total)
		}
		a.snaps[k-1] = append(cur, m.Data...)
		return nil
	}
	if int(m.Index) != k || k >= a.want || m.Offset != 0 {
		return fmt.Errorf("%w: chunk %d@%d where snapshot %d of %d was due", ErrProtocol, m.Index, m.Offset, k, a.want)
	}
	if a.total += int64(m.Total); a.total > maxResyncBytes {
		return fmt.Errorf("%w: resync snapshots exceed %d bytes", ErrProtocol, maxResyncBytes)
	}
	// Only what arrived: append grows the slice as later chunks do.
	a.snaps = append(a.snaps, bytes.Clone(m.Data))
	a.totals = append(a.totals, int(m.Total))
	return nil
}
