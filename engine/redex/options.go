package redex

import (
	"log/slog"
	"math"
	"time"
)

// Defaults applied by Open for zero-valued Options fields.
const (
	DefaultTailBuffer   = 1024
	DefaultMaxPayload   = 16 << 20
	DefaultSegmentBytes = 64 << 20
)

// IndexRecordSize is the size every entry is charged for its index record
// when byte retention is computed (payload bytes are charged on top; inline
// entries carry their payload inside the record).
const IndexRecordSize = 32

// Retention bounds the retained prefix of a log. Zero fields are unbounded.
// Sweep applies all set bounds and drops the largest prefix any of them asks
// for.
type Retention struct {
	// MaxEvents keeps at most this many entries.
	MaxEvents uint64
	// MaxBytes keeps at most this many bytes, counting IndexRecordSize per
	// entry plus its heap payload.
	MaxBytes uint64
	// MaxAge drops entries whose timestamp is strictly before now-MaxAge.
	// An entry exactly at the cutoff is kept.
	MaxAge time.Duration
}

// FsyncMode selects when a disk-mode log calls fsync on the append path.
type FsyncMode uint8

const (
	// FsyncNever leaves flushing to the OS; Sync and Close still fsync.
	FsyncNever FsyncMode = iota
	// FsyncEveryN fsyncs inside the append that completes every N entries.
	FsyncEveryN
	// FsyncInterval fsyncs from a background goroutine every Interval when
	// there are unsynced writes.
	FsyncInterval
	// FsyncIntervalOrBytes is FsyncInterval plus an fsync inside the append
	// that brings the unsynced bytes to at least Bytes.
	FsyncIntervalOrBytes
)

// FsyncPolicy is the disk-mode durability policy. Build it with FsyncNever,
// EveryN, Interval or IntervalOrBytes.
type FsyncPolicy struct {
	Mode     FsyncMode
	N        uint64
	Interval time.Duration
	Bytes    uint64
}

// EveryN returns a policy that fsyncs every n appended entries (n <= 1 syncs
// on every append).
func EveryN(n uint64) FsyncPolicy { return FsyncPolicy{Mode: FsyncEveryN, N: max(n, 1)} }

// Interval returns a policy that fsyncs unsynced writes every d.
func Interval(d time.Duration) FsyncPolicy { return FsyncPolicy{Mode: FsyncInterval, Interval: d} }

// IntervalOrBytes returns a policy that fsyncs every d, or as soon as b
// unsynced bytes have been written, whichever comes first. A zero d
// disables the timer; a zero b disables the byte threshold.
func IntervalOrBytes(d time.Duration, b uint64) FsyncPolicy {
	return FsyncPolicy{Mode: FsyncIntervalOrBytes, Interval: d, Bytes: b}
}

// Options configures a Log. The zero value is an in-memory log with default
// limits and no retention.
type Options struct {
	// Name labels the log in String and log messages (for example "shard-3").
	Name string
	// Dir enables disk mode: segment files are kept in this directory,
	// which is created if missing. Empty means memory only.
	Dir string
	// Fsync is the disk-mode fsync policy (ignored in memory mode).
	Fsync FsyncPolicy
	// SegmentBytes rolls to a new segment once the active one reaches this
	// size. Default DefaultSegmentBytes.
	SegmentBytes int64
	// Retention bounds what Sweep keeps.
	Retention Retention
	// TailBuffer is the per-subscriber buffer depth. Default
	// DefaultTailBuffer.
	TailBuffer int
	// MaxPayload is the largest accepted payload. Default DefaultMaxPayload;
	// capped at math.MaxInt32.
	MaxPayload int
	// HeapOnly makes the log refuse inline entries.
	HeapOnly bool
	// Clock returns the timestamp (Unix nanoseconds) stamped on appends.
	// Default is the wall clock at ClockResolution (see coarseClock).
	// Timestamps are clamped to be monotonic in seq.
	Clock func() int64
	// Logger receives operational messages. Default slog.Default().
	Logger *slog.Logger
	// FirstSeq is the seq the first append of a new, empty log gets (a
	// follower whose owner already pruned a prefix starts at the owner's
	// first retained seq, so both logs agree on every seq). It applies
	// only to a memory log and to a disk directory that holds no log yet;
	// a disk log that exists is reopened as it is on disk and FirstSeq is
	// ignored. It must be below Live (math.MaxUint64); Open refuses
	// Live with ErrSeqExhausted.
	FirstSeq uint64

	// hooks lets tests in this package inject file faults.
	hooks *testHooks
}

func (o *Options) withDefaults() Options {
	out := *o
	if out.TailBuffer <= 0 {
		out.TailBuffer = DefaultTailBuffer
	}
	if out.MaxPayload <= 0 {
		out.MaxPayload = DefaultMaxPayload
	}
	// Record lengths and heap offsets are 32-bit.
	out.MaxPayload = min(out.MaxPayload, math.MaxInt32)
	if out.SegmentBytes <= 0 {
		out.SegmentBytes = DefaultSegmentBytes
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	return out
}
