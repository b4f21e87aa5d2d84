package dedup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

var (
	// ErrCorrupt is returned by Load and Decode for a malformed state.
	ErrCorrupt = errors.New("dedup: corrupt state")
	magic      = [4]byte{'M', 'D', 'D', 'P'}
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

const stateVersion = 1

// maxIDLen bounds one id in a state file.
const maxIDLen = 1 << 16

// syncFile is swapped by tests to inject fsync failures.
var syncFile = func(f *os.File) error { return f.Sync() }

// Encode serialises the set: magic, version, capacity, count, ids oldest
// first (uvarint length + bytes), CRC-32C of everything before it.
func (s *Set) Encode() []byte {
	s.mu.Lock()
	ids := s.idsLocked()
	capacity := s.cap
	s.mu.Unlock()
	buf := append([]byte(nil), magic[:]...)
	buf = append(buf, stateVersion)
	buf = binary.BigEndian.AppendUint32(buf, uint32(capacity))
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(ids)))
	for _, id := range ids {
		buf = binary.AppendUvarint(buf, uint64(len(id)))
		buf = append(buf, id...)
	}
	return binary.BigEndian.AppendUint32(buf, crc32.Checksum(buf, castagnoli))
}

// Decode parses Encode's output into a new set with the stored capacity
// (clamped as by New), keeping FIFO order.
func Decode(b []byte) (*Set, error) {
	const header = 4 + 1 + 4 + 4
	if len(b) < header+4 {
		return nil, fmt.Errorf("%w: %d bytes", ErrCorrupt, len(b))
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	if [4]byte(body[:4]) != magic || body[4] != stateVersion {
		return nil, fmt.Errorf("%w: bad magic or version", ErrCorrupt)
	}
	capacity := binary.BigEndian.Uint32(body[5:9])
	count := binary.BigEndian.Uint32(body[9:13])
	if capacity == 0 || capacity > MaxCapacity || count > capacity {
		return nil, fmt.Errorf("%w: capacity %d count %d", ErrCorrupt, capacity, count)
	}
	s := New(int(capacity))
	rest := body[header:]
	for i := uint32(0); i < count; i++ {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > maxIDLen || uint64(len(rest)-k) < n {
			return nil, fmt.Errorf("%w: id %d truncated", ErrCorrupt, i)
		}
		id := string(rest[k : k+int(n)])
		rest = rest[k+int(n):]
		if _, dup := s.index[id]; dup {
			return nil, fmt.Errorf("%w: duplicate id %q", ErrCorrupt, id)
		}
		s.insertLocked(id)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(rest))
	}
	return s, nil
}

// Save writes the set to path atomically (see the package invariants).
func (s *Set) Save(path string) error {
	data := s.Encode()
	tmp := path + ".tmp"
	// A crash between create and rename leaves tmp behind; O_EXCL below
	// would then fail forever. Remove it first.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("dedup save: remove stale temp: %w", err)
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("dedup save: %w", err)
	}
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("dedup save: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := syncFile(f); err != nil {
		return fail(fmt.Errorf("fsync %s: %w", tmp, err))
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("dedup save: close: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("dedup save: %w", err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("dedup save: open dir: %w", err)
	}
	defer d.Close()
	if err := syncFile(d); err != nil {
		return fmt.Errorf("dedup save: fsync dir: %w", err)
	}
	return nil
}

// Load reads a set saved by Save.
func Load(path string) (*Set, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dedup load: %w", err)
	}
	s, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("dedup load %s: %w", path, err)
	}
	return s, nil
}
