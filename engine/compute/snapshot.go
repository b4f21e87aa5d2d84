package compute

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Snapshot is a daemon's state together with everything needed to rebuild
// it elsewhere: its identity, kind and config, and the cursor the state
// covers (events with seq >= Cursor.Next() are not reflected in State).
type Snapshot struct {
	Daemon string
	Kind   string
	Config []byte
	Cursor Cursor
	// State is nil for a stateless daemon.
	State []byte
}

// snapshotVersion prefixes every encoded snapshot so the format can change.
const snapshotVersion = 1

// maxSnapshotField bounds each length-prefixed string field on decode.
const maxSnapshotField = 1 << 16

// ErrBadSnapshot is returned by DecodeSnapshot for malformed input.
var ErrBadSnapshot = errors.New("compute: malformed snapshot")

// Encode serializes s: version, daemon, kind, config, next, flags, state.
func (s *Snapshot) Encode() []byte {
	n := 1 + 3*binary.MaxVarintLen64 + len(s.Daemon) + len(s.Kind) + len(s.Config) + 8 + 1 + binary.MaxVarintLen64 + len(s.State)
	b := make([]byte, 0, n)
	b = append(b, snapshotVersion)
	b = appendBytes(b, []byte(s.Daemon))
	b = appendBytes(b, []byte(s.Kind))
	b = appendBytes(b, s.Config)
	b = binary.LittleEndian.AppendUint64(b, s.Cursor.next)
	var flags byte
	if s.Cursor.exhausted {
		flags |= 1
	}
	if s.State != nil {
		flags |= 2
	}
	b = append(b, flags)
	b = appendBytes(b, s.State)
	return b
}

// DecodeSnapshot parses bytes produced by Encode. It copies nothing it does
// not need to: the returned State and Config alias b.
func DecodeSnapshot(b []byte) (*Snapshot, error) {
	if len(b) == 0 || b[0] != snapshotVersion {
		return nil, fmt.Errorf("%w: bad version", ErrBadSnapshot)
	}
	b = b[1:]
	var s Snapshot
	var daemon, kind []byte
	var err error
	if daemon, b, err = readBytes(b, maxSnapshotField); err != nil {
		return nil, fmt.Errorf("%w: daemon: %v", ErrBadSnapshot, err)
	}
	if kind, b, err = readBytes(b, maxSnapshotField); err != nil {
		return nil, fmt.Errorf("%w: kind: %v", ErrBadSnapshot, err)
	}
	if s.Config, b, err = readBytes(b, len(b)); err != nil {
		return nil, fmt.Errorf("%w: config: %v", ErrBadSnapshot, err)
	}
	if len(b) < 9 {
		return nil, fmt.Errorf("%w: truncated cursor", ErrBadSnapshot)
	}
	s.Cursor.next = binary.LittleEndian.Uint64(b)
	flags := b[8]
	b = b[9:]
	if flags&^3 != 0 {
		return nil, fmt.Errorf("%w: unknown flags %#x", ErrBadSnapshot, flags)
	}
	s.Cursor.exhausted = flags&1 != 0
	if s.Cursor.exhausted && s.Cursor.next != ^uint64(0) {
		return nil, fmt.Errorf("%w: exhausted cursor below max", ErrBadSnapshot)
	}
	var state []byte
	if state, b, err = readBytes(b, len(b)); err != nil {
		return nil, fmt.Errorf("%w: state: %v", ErrBadSnapshot, err)
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrBadSnapshot, len(b))
	}
	if flags&2 != 0 {
		if state == nil {
			state = []byte{}
		}
		s.State = state
	} else if len(state) != 0 {
		return nil, fmt.Errorf("%w: state bytes on a stateless snapshot", ErrBadSnapshot)
	}
	s.Daemon, s.Kind = string(daemon), string(kind)
	return &s, nil
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func readBytes(b []byte, max int) (v, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, nil, errors.New("bad length")
	}
	b = b[k:]
	if n > uint64(max) || n > uint64(len(b)) {
		return nil, nil, fmt.Errorf("length %d exceeds %d available", n, len(b))
	}
	if n == 0 {
		return nil, b, nil
	}
	return b[:n:n], b[n:], nil
}
