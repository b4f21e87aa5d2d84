package daemons

import (
	"encoding/json"
	"fmt"

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
	Counts    map[string]uint64 `json:"counts"`
	Malformed uint64            `json:"malformed"`
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

func (c *Counter) Snapshot() ([]byte, error) { return json.Marshal(&c.state) }

func (c *Counter) Restore(b []byte) error {
	var s counterState
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("daemons: counter restore: %w", err)
	}
	if s.Counts == nil {
		s.Counts = map[string]uint64{}
	}
	c.state = s
	return nil
}
