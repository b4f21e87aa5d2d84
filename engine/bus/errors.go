package bus

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

var (
	// ErrBackpressure: the shard's ring is full and the mode refused the
	// event. Nothing was accepted; the producer may retry later.
	ErrBackpressure = errors.New("bus: backpressure")
	// ErrSampled: the Sample policy dropped the event on purpose. Retrying
	// is pointless.
	ErrSampled = errors.New("bus: event dropped by sampling")
	// ErrUnrouted: no active shard can take the event right now (for a
	// keyed event: its base shard is not active). Retry once the topology
	// stabilises.
	ErrUnrouted = errors.New("bus: no routable shard")
	// ErrClosed: the bus is shutting down or closed.
	ErrClosed = errors.New("bus: closed")
	// ErrLossyShutdown: Close hit its deadline and abandoned events.
	ErrLossyShutdown = errors.New("bus: shutdown dropped events")
)

// Attempt is one failed OnBatch call.
type Attempt struct {
	N        int // 0-based attempt number
	Err      error
	Duration time.Duration
}

// DispatchError reports a batch the bus gave up on, with the reason of
// every attempt (not just the last).
type DispatchError struct {
	Shard    uint16
	Seq      uint64
	Events   int
	Attempts []Attempt
}

func (e *DispatchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "bus: shard %d batch %d (%d events) failed after %d attempts", e.Shard, e.Seq, e.Events, len(e.Attempts))
	for _, a := range e.Attempts {
		fmt.Fprintf(&b, "; attempt %d: %v", a.N, a.Err)
	}
	return b.String()
}

// Unwrap exposes every attempt's error to errors.Is / errors.As.
func (e *DispatchError) Unwrap() []error {
	out := make([]error, len(e.Attempts))
	for i, a := range e.Attempts {
		out[i] = a.Err
	}
	return out
}
