package adapter

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// MaxShardID is the largest shard id a store may hold. Shard ids are 16-bit
// cluster-wide; a remote payload that names a larger one is malformed.
const MaxShardID = math.MaxUint16

// ErrFatal marks errors that will not go away on retry. Test with
// errors.Is(err, ErrFatal).
var ErrFatal = errors.New("fatal adapter error")

// Fatal wraps err so that errors.Is(result, ErrFatal) holds.
func Fatal(format string, args ...any) error {
	return &fatalError{err: fmt.Errorf(format, args...)}
}

type fatalError struct{ err error }

func (e *fatalError) Error() string   { return "fatal: " + e.err.Error() }
func (e *fatalError) Unwrap() []error { return []error{ErrFatal, e.err} }

// IsFatal reports whether err is non-retryable.
func IsFatal(err error) bool { return errors.Is(err, ErrFatal) }

// Event is one event as the bus hands it to an adapter.
type Event struct {
	// Payload is the raw event bytes. Adapters must not modify or retain it
	// past OnBatch unless they copy it (the RedEX adapter copies into its
	// heap).
	Payload []byte
	// Timestamp is the bus's ingest timestamp in nanoseconds.
	Timestamp uint64
}

// Batch is a run of events for one shard, in ingest order.
type Batch struct {
	Shard uint16
	// Seq numbers this shard's batches from 0 in dispatch order. A retried
	// batch keeps its Seq, so DedupID is stable across retries.
	Seq uint64
	// Nonce identifies the producing bus instance (see DedupID).
	Nonce  string
	Events []Event
}

// DedupID is the id written with event i of batch b. It is the same on
// every retry of b, so stores with server-side de-duplication (JetStream's
// Nats-Msg-Id) or consumers using package dedup drop the duplicates a
// partial write followed by a retry would create.
func (b *Batch) DedupID(i int) string {
	var sb strings.Builder
	sb.Grow(len(b.Nonce) + 32)
	sb.WriteString(b.Nonce)
	sb.WriteByte(':')
	sb.WriteString(strconv.FormatUint(uint64(b.Shard), 10))
	sb.WriteByte(':')
	sb.WriteString(strconv.FormatUint(b.Seq, 10))
	sb.WriteByte(':')
	sb.WriteString(strconv.Itoa(i))
	return sb.String()
}

// StoredEvent is an event read back from a store.
type StoredEvent struct {
	Shard uint16
	// Pos is this entry's position; the entry after it is at or after
	// Pos.Next().
	Pos       Position
	Payload   []byte
	Timestamp uint64
	// DedupID is the id the entry was written with ("" if the store keeps
	// none).
	DedupID string
}

// PollResult is what PollShard returns.
type PollResult struct {
	Events []StoredEvent
	// Next is where the following poll should start. It is never before the
	// poll's from position.
	Next Position
	// HasMore reports that the store holds entries at or after Next that
	// this poll did not return (because of the limit).
	HasMore bool
}

// Adapter is a store for the bus's shards. Implementations are safe for
// concurrent use; the bus calls OnBatch for a given shard from one goroutine
// at a time, so per-shard order is the call order.
type Adapter interface {
	// OnBatch appends b to shard b.Shard. On error the bus may call it again
	// with the same batch.
	OnBatch(ctx context.Context, b Batch) error
	// PollShard returns up to limit entries of shard at or after from.
	PollShard(ctx context.Context, shard uint16, from Position, limit int) (PollResult, error)
	// Flush returns once everything accepted by OnBatch is acknowledged by
	// the store.
	Flush(ctx context.Context) error
	// Healthy reports whether the store answers, within a bounded time
	// even if ctx has no deadline.
	Healthy(ctx context.Context) bool
	// Close releases the adapter's resources.
	Close() error
}

// SatAdd1 returns v+1, or v when that would wrap.
func SatAdd1(v uint64) uint64 {
	if v == math.MaxUint64 {
		return v
	}
	return v + 1
}

// SatLimitPlus1 returns limit+1 for an int limit, saturating at
// math.MaxInt. Adapters ask their store for one extra entry to learn
// whether more remain.
func SatLimitPlus1(limit int) int {
	if limit >= math.MaxInt {
		return math.MaxInt
	}
	return limit + 1
}
