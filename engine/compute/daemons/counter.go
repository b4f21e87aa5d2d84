package daemons

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/purplerain/mesh-operator/engine/compute"
)

// CounterConfig configures a counter daemon.
type CounterConfig struct {
	// KeyField names the JSON field holding the key when the event has no
	// log key. Default "key".
	KeyField string `json:"keyField,omitempty"`
}

// Counter counts events per key.
type Counter struct {
	name  string
	cfg   CounterConfig
	state counterState
}

type counterState struct {
	Counts    map[string]uint64
	Malformed uint64
}

// NewCounter is the counter kind's factory.
func NewCounter(name string, config []byte) (compute.MeshDaemon, error) {
	c := &Counter{name: name, state: counterState{Counts: map[string]uint64{}}}
	if err := decodeConfig(config, &c.cfg); err != nil {
		return nil, err
	}
	if c.cfg.KeyField == "" {
		c.cfg.KeyField = "key"
	}
	return c, nil
}

func (c *Counter) Name() string   { return c.name }
func (c *Counter) Stateful() bool { return true }

// Count returns the count for key.
func (c *Counter) Count(key string) uint64 { return c.state.Counts[key] }

func (c *Counter) Process(ev compute.Event) ([][]byte, error) {
	key, ok := string(ev.Key), len(ev.Key) > 0
	if !ok {
		if fields, okf := decodeFields(ev.Payload); okf {
			key, ok = eventKey(ev, fields, c.cfg.KeyField)
		}
	}
	if !ok {
		c.state.Malformed++
		return nil, nil
	}
	c.state.Counts[key]++
	return nil, nil
}

// counterMagic and counterVersion open a counter snapshot.
const (
	counterMagic   = 'C'
	counterVersion = 1
)

// Snapshot encodes the state compactly: magic, version, malformed count,
// key count, then (key, count) pairs in key order so equal states give
// equal bytes.
func (c *Counter) Snapshot() ([]byte, error) {
	keys := make([]string, 0, len(c.state.Counts))
	size := 2 + 2*binary.MaxVarintLen64
	for k := range c.state.Counts {
		keys = append(keys, k)
		size += len(k) + 2*binary.MaxVarintLen64
	}
	sort.Strings(keys)
	b := make([]byte, 0, size)
	b = append(b, counterMagic, counterVersion)
	b = binary.AppendUvarint(b, c.state.Malformed)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, c.state.Counts[k])
	}
	return b, nil
}

// Restore decodes a Snapshot. Malformed input leaves the state unchanged.
func (c *Counter) Restore(b []byte) error {
	s, err := decodeCounter(b)
	if err != nil {
		return fmt.Errorf("daemons: counter restore: %w", err)
	}
	c.state = s
	return nil
}

var errCounterSnapshot = errors.New("malformed counter snapshot")

func decodeCounter(b []byte) (counterState, error) {
	if len(b) < 2 || b[0] != counterMagic || b[1] != counterVersion {
		return counterState{}, fmt.Errorf("%w: bad header", errCounterSnapshot)
	}
	b = b[2:]
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	malformed, ok1 := next()
	n, ok2 := next()
	// Every entry takes at least 2 bytes; refuse counts the input cannot hold.
	if !ok1 || !ok2 || n > uint64(len(b))/2 {
		return counterState{}, fmt.Errorf("%w: bad counts", errCounterSnapshot)
	}
	s := counterState{Counts: make(map[string]uint64, n), Malformed: malformed}
	prev := ""
	for i := uint64(0); i < n; i++ {
		l, ok := next()
		if !ok || l > uint64(len(b)) {
			return counterState{}, fmt.Errorf("%w: entry %d", errCounterSnapshot, i)
		}
		k := string(b[:l])
		b = b[l:]
		v, ok := next()
		if !ok || (i > 0 && k <= prev) {
			return counterState{}, fmt.Errorf("%w: entry %d", errCounterSnapshot, i)
		}
		s.Counts[k], prev = v, k
	}
	if len(b) != 0 {
		return counterState{}, fmt.Errorf("%w: %d trailing bytes", errCounterSnapshot, len(b))
	}
	return s, nil
}
