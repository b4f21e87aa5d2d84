package bus

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/purplerain/mesh-operator/engine/bus/shard"
)

// Mode is a backpressure mode.
type Mode uint8

const (
	ModeDropOldest Mode = iota
	ModeDropNewest
	ModeFailProducer
	ModeSample
)

// Backpressure is what an ingest does when its shard's ring is full.
type Backpressure struct {
	Mode Mode
	// Rate is Sample's n: one in n events is admitted under pressure.
	Rate uint64
}

// DropOldest evicts the oldest queued event to make room.
func DropOldest() Backpressure { return Backpressure{Mode: ModeDropOldest} }

// DropNewest refuses the new event and counts it as dropped.
func DropNewest() Backpressure { return Backpressure{Mode: ModeDropNewest} }

// FailProducer refuses the new event and leaves it to the producer.
func FailProducer() Backpressure { return Backpressure{Mode: ModeFailProducer} }

// Sample admits one in n events under pressure (n < 1 is treated as 1).
func Sample(n uint64) Backpressure { return Backpressure{Mode: ModeSample, Rate: max(n, 1)} }

func (b Backpressure) String() string {
	switch b.Mode {
	case ModeDropOldest:
		return "DropOldest"
	case ModeDropNewest:
		return "DropNewest"
	case ModeFailProducer:
		return "FailProducer"
	case ModeSample:
		return fmt.Sprintf("Sample(%d)", b.Rate)
	}
	return fmt.Sprintf("Mode(%d)", b.Mode)
}

// BatchConfig bounds the adaptive batch size.
type BatchConfig struct {
	Min, Max int
	// MaxDelay is the longest the first event of a partial batch waits.
	MaxDelay time.Duration
}

// Config configures a Bus. Zero fields take the defaults noted.
type Config struct {
	// BaseShards are created Active at New as shards 0..BaseShards-1;
	// keyed events hash onto them. Default 1.
	BaseShards int
	// NoBaseShards starts the bus with no shard at all: the caller adds
	// exactly the shards it wants with AddShard (a mesh node adds the
	// cluster shards it owns) and routes events itself with IngestTo.
	// Keyed Ingest is then refused with ErrUnrouted, since keys map onto
	// base shards.
	NoBaseShards bool
	// MaxShards bounds the shards that may exist at once. Default 1024.
	MaxShards int
	// RingCapacity is each shard's ring size (rounded up to a power of
	// two). Default 1<<16.
	RingCapacity int
	// Backpressure applies when a ring is full. Default DropOldest.
	Backpressure Backpressure
	// Batch defaults to {Min 64, Max 4096, MaxDelay 1ms}.
	Batch BatchConfig
	// AdapterTimeout bounds each OnBatch attempt. Default 5s.
	AdapterTimeout time.Duration
	// MaxAttempts is how many times a batch is tried. Default 4.
	MaxAttempts int
	// RetryBase and RetryMax bound RetryBackoff. Defaults 10ms and 1s.
	RetryBase, RetryMax time.Duration
	// RouteRefresh is how often the least-loaded candidate set is
	// recomputed. Default 2ms.
	RouteRefresh time.Duration
	// Scaling enables the autoscaling monitor when non-nil.
	Scaling *shard.Policy
	// MonitorInterval is how often scaling metrics are sampled and the
	// policy evaluated. Default 1s.
	MonitorInterval time.Duration
	// ShutdownTimeout bounds Close. Default 30s.
	ShutdownTimeout time.Duration
	// Now is the wall clock the scaling policy sees. Default time.Now.
	Now func() time.Time
	// OnDispatchError is called (from the shard's batch worker) for every
	// batch the bus gives up on.
	OnDispatchError func(*DispatchError)
	Logger          *slog.Logger
}

func (c Config) withDefaults() Config {
	switch {
	case c.NoBaseShards:
		c.BaseShards = 0
	case c.BaseShards <= 0:
		c.BaseShards = 1
	}
	if c.MaxShards <= 0 {
		c.MaxShards = 1024
	}
	if c.MaxShards < c.BaseShards {
		c.MaxShards = c.BaseShards
	}
	if c.RingCapacity <= 0 {
		c.RingCapacity = 1 << 16
	}
	if c.Backpressure.Mode == ModeSample && c.Backpressure.Rate == 0 {
		c.Backpressure.Rate = 1
	}
	if c.Batch.Min <= 0 {
		c.Batch.Min = 64
	}
	if c.Batch.Max <= 0 {
		c.Batch.Max = 4096
	}
	if c.Batch.Max < c.Batch.Min {
		c.Batch.Max = c.Batch.Min
	}
	if c.Batch.MaxDelay <= 0 {
		c.Batch.MaxDelay = time.Millisecond
	}
	if c.AdapterTimeout <= 0 {
		c.AdapterTimeout = 5 * time.Second
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 4
	}
	if c.RetryBase <= 0 {
		c.RetryBase = 10 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = time.Second
	}
	if c.RouteRefresh <= 0 {
		c.RouteRefresh = 2 * time.Millisecond
	}
	if c.MonitorInterval <= 0 {
		c.MonitorInterval = time.Second
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}
