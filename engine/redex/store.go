package redex

// Flags are per-entry flag bits kept in the index record.
type Flags uint32

const (
	// FlagInline marks an entry whose 8-byte payload lives in the index
	// record. Only AppendInline sets it.
	FlagInline Flags = 1 << 31
	// FlagTombstone is a logical delete marker available to callers.
	FlagTombstone Flags = 1 << 30
)

// Entry is one log entry as handed to readers and tail subscribers.
type Entry struct {
	Seq uint64
	// Time is the append timestamp in Unix nanoseconds.
	Time  int64
	Flags Flags
	// Payload aliases the log's immutable heap; do not modify it.
	Payload []byte
}

// record is the fixed-size in-memory index record; chunk/off locate the
// payload in the heap. An inline entry's 8 bytes live in the record on disk;
// in memory they are mirrored into the heap so that reads hand out a slice
// without allocating, but inline entries are charged no payload bytes.
type record struct {
	ts    int64
	chunk uint32
	off   uint32
	n     uint32
	flags Flags
	crc   uint32
}

const (
	idxChunkShift = 12
	idxChunkLen   = 1 << idxChunkShift
	heapChunkSize = 1 << 20
)

type heapChunk struct {
	buf  []byte // fixed length; never re-sliced, so appends write no pointers
	used int
	last uint64 // last seq whose payload lives in buf
}

// store is the in-memory index and heap of a Log. It is not safe for
// concurrent use; Log serialises access with its state lock.
type store struct {
	first, next uint64
	bytes       uint64 // retained bytes: IndexRecordSize per entry + heap payload

	idx     [][]record // idx[i] holds seqs of index chunk number idxBase+i
	idxBase uint64
	spare   []record // one recycled index chunk, so steady state allocates nothing

	heap     []heapChunk // heap[i] is chunk id heapBase+i
	heapBase uint32
}

func (s *store) init(next uint64) {
	s.first, s.next = next, next
	s.idxBase = next >> idxChunkShift
}

func (s *store) len() uint64 { return s.next - s.first }

// rec returns the index record of a retained seq.
func (s *store) rec(seq uint64) *record {
	c := seq>>idxChunkShift - s.idxBase
	return &s.idx[c][seq&(idxChunkLen-1)]
}

// heapPut copies p into the heap and returns its chunk id and offset.
func (s *store) heapPut(seq uint64, p []byte) (uint32, uint32) {
	n := len(p)
	if n == 0 {
		return 0, 0
	}
	if k := len(s.heap); k > 0 {
		c := &s.heap[k-1]
		if len(c.buf)-c.used >= n {
			off := c.used
			copy(c.buf[off:], p)
			c.used += n
			c.last = seq
			return s.heapBase + uint32(k-1), uint32(off)
		}
	}
	// A new chunk; oversize payloads get a chunk of their own size. Chunk
	// ids grow with seq, so retention frees chunks from the front.
	buf := make([]byte, max(heapChunkSize, n))
	copy(buf, p)
	s.heap = append(s.heap, heapChunk{buf: buf, used: n, last: seq})
	return s.heapBase + uint32(len(s.heap)-1), 0
}

func (s *store) payload(r *record) []byte {
	if r.n == 0 {
		return nil
	}
	c := s.heap[r.chunk-s.heapBase].buf
	return c[r.off : r.off+r.n : r.off+r.n]
}

// put stores the entry for seq s.next and advances s.next.
func (s *store) put(ts int64, p []byte, flags Flags, crc uint32) {
	seq := s.next
	c := seq>>idxChunkShift - s.idxBase
	if c == uint64(len(s.idx)) {
		chunk := s.spare
		s.spare = nil
		if chunk == nil {
			chunk = make([]record, idxChunkLen)
		}
		s.idx = append(s.idx, chunk)
	}
	r := &s.idx[c][seq&(idxChunkLen-1)]
	r.ts, r.n, r.flags, r.crc = ts, uint32(len(p)), flags, crc
	r.chunk, r.off = s.heapPut(seq, p)
	s.bytes += entryBytes(r)
	s.next++
}

// entryBytes is what an entry counts against byte retention.
func entryBytes(r *record) uint64 {
	if r.flags&FlagInline != 0 {
		return IndexRecordSize
	}
	return IndexRecordSize + uint64(r.n)
}

func (s *store) entry(seq uint64) Entry {
	r := s.rec(seq)
	return Entry{Seq: seq, Time: r.ts, Flags: r.flags, Payload: s.payload(r)}
}

// dropPrefix forgets the first k retained entries and frees index and heap
// chunks nothing retained points into any more.
func (s *store) dropPrefix(k uint64) {
	for i := uint64(0); i < k; i++ {
		s.bytes -= entryBytes(s.rec(s.first + i))
	}
	s.first += k
	// Index chunk c holds seqs [c<<shift, (c+1)<<shift); it is wholly
	// dropped when c < first>>shift (the shifted form cannot overflow at
	// the top of the seq space).
	for len(s.idx) > 0 && s.idxBase < s.first>>idxChunkShift {
		if s.spare == nil {
			s.spare = s.idx[0]
		}
		s.idx[0] = nil
		s.idx = s.idx[1:]
		s.idxBase++
	}
	if len(s.idx) == 0 {
		s.idxBase = s.next >> idxChunkShift
	}
	for len(s.heap) > 0 && s.heap[0].last < s.first {
		s.heap[0] = heapChunk{}
		s.heap = s.heap[1:]
		s.heapBase++
	}
}
