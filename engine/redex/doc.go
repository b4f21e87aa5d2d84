// Package redex is the engine's append-only event log (one Log per shard).
//
// A Log keeps fixed-size index records (seq, timestamp, payload location and
// length, flags, checksum) over a chunked payload heap. It runs purely in
// memory, or in disk mode where every record is also written to checksummed
// segment files under a directory and the in-memory view is rebuilt from
// them on reopen.
//
// Invariants (each pinned by a test named after it):
//
//   - Sequence numbers start at Options.FirstSeq (0 unless set) and are
//     dense: the n-th entry ever appended has seq FirstSeq+n. Retention only
//     ever drops a prefix, so the retained entries are always the contiguous
//     range [FirstSeq, NextSeq). Options.FirstSeq applies only to a new log;
//     a disk log that exists reopens at the seqs on disk.
//   - Seqs never wrap: math.MaxUint64 is Live, never an entry's seq, so
//     NextSeq stops there and every append after that (local or
//     replicated, or a batch that would reach it) is refused whole with
//     ErrSeqExhausted; Open refuses Options.FirstSeq == Live the same way.
//   - A replica holds its owner's seqs, stamps and flags: AppendReplicated
//     takes an entry only if its seq is exactly NextSeq (else a
//     *SeqGapError) and its stamp is not before the previous entry's
//     (ErrTimeRegression), and a replicated batch is appended whole or not
//     at all. Local appends after replicated ones are stamped no earlier.
//   - TruncateFrom(seq) cuts a replica back to [FirstSeq, seq) (never below
//     FirstSeq: ErrPruned) and ends every tail with ErrTruncated. Payload
//     slices handed out before stay unchanged (the heap space of dropped
//     entries is never reused), and in disk mode the cut is fsynced and
//     survives a reopen; a crash part way leaves a shorter suffix, never a
//     hole. An Index over a truncated log stops (it does not rebuild).
//   - ResetTo(seq) restarts a replica empty at seq >= NextSeq (its owner
//     pruned past it): every entry goes, tails end with ErrTruncated, and
//     in disk mode the FIRST mark is fsynced before any segment is
//     deleted, so a crash part way reopens as the reset log.
//   - AppendBatch of an empty slice reports ok=false ("nothing appended"),
//     which is distinguishable from a batch whose first entry got seq 0.
//   - Retention combines max events, max bytes (index record size plus
//     payload) and max age; each policy proposes a prefix to drop and the
//     largest drop wins. An entry whose timestamp equals the age cutoff is
//     kept. Retention runs only when the owner calls Sweep.
//   - Tail registers backfill and live delivery under one lock hold, so no
//     entry is missed or delivered twice at the seam. If the requested start
//     was already pruned, or the backfill does not fit the tail buffer, the
//     subscriber's first item is a *LaggedError. A live subscriber whose
//     buffer is full is disconnected with a *LaggedError; entries are never
//     skipped silently.
//   - NextSeq reads under the state lock, so a sequence number that is
//     assigned and then rolled back (a failed disk write) is never
//     observable. String reads only lock-free atomics and never blocks on
//     the state lock.
//   - The inline flag is only set by AppendInline; heap appends that ask for
//     it, and any inline append on a HeapOnly log, are refused with
//     ErrInlineOnHeap. Payloads above Options.MaxPayload are refused with a
//     *PayloadTooLargeError.
//   - Disk mode: every frame carries a CRC-32C over its header and payload.
//     On reopen a bad suffix of the last segment with no intact frame after
//     it (a torn write) is truncated and everything before it survives. Bad
//     bytes followed by an intact frame, and any damage to an earlier
//     segment, are ErrCorrupt: the frames after them may have been fsynced,
//     so Open refuses rather than cut them. (A power cut that persisted a
//     later page of unsynced frames but not an earlier one looks the same
//     and is refused too.) Repair is the explicit, opt-in way out: it
//     cuts the log back to the last good frame before the first damage,
//     keeps everything before it and reports how many intact frames and
//     bytes it dropped; Open never calls it.
//     Fsync errors are returned to the caller and poison the log: later
//     appends fail with the same error instead of pretending durability.
//   - Frame seqs are dense within and across segments. The FIRST mark is
//     fsynced, the active segment maybe not, so after a power cut the
//     segments can end below the mark; Open then starts a new segment at
//     the mark instead of continuing the old one with a gap, and deletes
//     the segments below it.
//
// Disk mode keeps the retained entries in memory as well (the segment files
// are the durable copy, read back only on Open), so a disk-mode log needs
// memory for its retained payloads just like a memory-mode one. Retention
// deletes whole segments whose entries were all dropped and records the
// oldest retained seq in a small checksummed FIRST file, so dropped entries
// stay dropped across a restart. Frames carry their timestamps, so age
// retention survives a restart too.
//
// The default append clock is the wall clock at ClockResolution (1 ms),
// rounded up: one wall reading serves appends for up to 1 ms, checked
// against the monotonic clock on every append (no timer), so a stamp is
// never earlier than its append however loaded the machine is; see
// coarseClock. Tests and callers that need exact stamps set Options.Clock.
//
// Payload slices handed out by Read and Tail alias the log's heap. The heap
// is append-only (chunks are dropped by retention, never rewritten), so the
// slices stay valid and immutable; callers must not modify them.
package redex
