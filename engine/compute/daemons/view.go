package daemons

import (
	"fmt"
	"maps"
)

// CounterState is the JSON view of a counter's state.
type CounterState struct {
	Counts    map[string]uint64 `json:"counts"`
	Malformed uint64            `json:"malformed"`
}

// SumState is the JSON view of a sum's state: each key's open window.
type SumState struct {
	Open      map[string]WindowTotal `json:"open"`
	Late      uint64                 `json:"late"`
	Malformed uint64                 `json:"malformed"`
}

// TasksState is the JSON view of a tasks model.
type TasksState struct {
	Tasks     map[uint64]Task `json:"tasks"`
	Unknown   uint64          `json:"unknown"`
	Malformed uint64          `json:"malformed"`
}

// State returns a copy of the counter's state for display. Like every
// daemon method it must not run concurrently with Process (a host
// serializes them).
func (c *Counter) State() any {
	return CounterState{Counts: maps.Clone(c.state.Counts), Malformed: c.state.Malformed}
}

// State returns a copy of the sum's state for display.
func (s *Sum) State() any {
	out := SumState{Open: make(map[string]WindowTotal, len(s.state.Open)), Late: s.state.Late, Malformed: s.state.Malformed}
	for k, w := range s.state.Open {
		out.Open[k] = *w
	}
	return out
}

// State returns a copy of the tasks model for display.
func (t *Tasks) State() any {
	out := TasksState{Tasks: make(map[uint64]Task, len(t.state.Tasks)), Unknown: t.state.Unknown, Malformed: t.state.Malformed}
	for id, task := range t.state.Tasks {
		out.Tasks[id] = *task
	}
	return out
}

// StateView decodes the state bytes of a built-in kind's snapshot into its
// JSON view (CounterState, SumState or TasksState), by restoring them into
// a private daemon built from config. It never touches a running daemon,
// so it is safe to call on a snapshot taken from a live host.
func StateView(kind string, config, state []byte) (any, error) {
	d, err := Builtins().New(kind, "view", config)
	if err != nil {
		return nil, err
	}
	if err := d.Restore(state); err != nil {
		return nil, fmt.Errorf("daemons: decode %s state: %w", kind, err)
	}
	v, ok := d.(interface{ State() any })
	if !ok {
		return nil, fmt.Errorf("daemons: kind %s has no state view", kind)
	}
	return v.State(), nil
}
