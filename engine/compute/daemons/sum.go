package daemons

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/purplerain/mesh-operator/engine/compute"
)

// SumConfig configures a sum daemon.
type SumConfig struct {
	// Field is the numeric JSON field summed. Required. Totals are float64,
	// so integer totals above 2^53 lose precision.
	Field string `json:"field"`
	// KeyField names the key field when the event has no log key.
	KeyField string `json:"keyField,omitempty"`
	// Window is the tumbling window length (Go duration, e.g. "1m").
	Window string `json:"window"`
	// TimeField, when set, names a JSON field holding the event time in
	// Unix nanoseconds; otherwise the log entry's timestamp is used.
	TimeField string `json:"timeField,omitempty"`
}

// Sum sums a numeric field per key over tumbling windows of event time.
// When an event opens a later window for its key, the closed window's
// total is emitted as a JSON WindowTotal. Events for a window older than
// the key's open window are late: counted and dropped. An event that would
// push a window's total past the float64 range is counted as malformed and
// dropped, so the state always stays snapshottable.
type Sum struct {
	name   string
	cfg    SumConfig
	window int64
	state  sumState
}

type sumState struct {
	Open      map[string]*WindowTotal `json:"open"`
	Late      uint64                  `json:"late"`
	Malformed uint64                  `json:"malformed"`
}

// WindowTotal is one key's total over one window [Start, End) in Unix ns.
type WindowTotal struct {
	Key   string  `json:"key"`
	Start int64   `json:"start"`
	End   int64   `json:"end"`
	Sum   float64 `json:"sum"`
	Count uint64  `json:"count"`
}

// NewSum is the sum kind's factory.
func NewSum(name string, config []byte) (compute.MeshDaemon, error) {
	s := &Sum{name: name, state: sumState{Open: map[string]*WindowTotal{}}}
	if err := decodeConfig(config, &s.cfg); err != nil {
		return nil, err
	}
	if s.cfg.Field == "" {
		return nil, errors.New("daemons: sum: config.field is required")
	}
	if s.cfg.KeyField == "" {
		s.cfg.KeyField = "key"
	}
	d, err := time.ParseDuration(s.cfg.Window)
	if err != nil || d <= 0 {
		return nil, fmt.Errorf("daemons: sum: config.window %q must be a positive duration", s.cfg.Window)
	}
	s.window = int64(d)
	return s, nil
}

func (s *Sum) Name() string   { return s.name }
func (s *Sum) Stateful() bool { return true }

// Open returns the open window for key, if any.
func (s *Sum) Open(key string) (WindowTotal, bool) {
	w, ok := s.state.Open[key]
	if !ok {
		return WindowTotal{}, false
	}
	return *w, true
}

func (s *Sum) Process(ev compute.Event) ([][]byte, error) {
	fields, ok := decodeFields(ev.Payload)
	if !ok {
		s.state.Malformed++
		return nil, nil
	}
	key, okKey := eventKey(ev, fields, s.cfg.KeyField)
	val, okVal := number(fields[s.cfg.Field])
	t := ev.Time
	okTime := true
	if s.cfg.TimeField != "" {
		t, okTime = integer(fields[s.cfg.TimeField])
	}
	if !okKey || !okVal || !okTime {
		s.state.Malformed++
		return nil, nil
	}
	start := t - mod(t, s.window)
	w := s.state.Open[key]
	if w != nil && start == w.Start && math.IsInf(w.Sum+val, 0) {
		// JSON has no infinity: an overflowed total would make every later
		// snapshot (and so migration and standby sync) fail.
		s.state.Malformed++
		return nil, nil
	}
	var out [][]byte
	switch {
	case w == nil:
	case start < w.Start:
		s.state.Late++
		return nil, nil
	case start > w.Start:
		b, err := json.Marshal(w)
		if err != nil {
			return nil, fmt.Errorf("daemons: sum: encode window: %w", err)
		}
		out = [][]byte{b}
		w = nil
	}
	if w == nil {
		w = &WindowTotal{Key: key, Start: start, End: start + s.window}
		s.state.Open[key] = w
	}
	w.Sum += val
	w.Count++
	return out, nil
}

func (s *Sum) Snapshot() ([]byte, error) { return json.Marshal(&s.state) }

func (s *Sum) Restore(b []byte) error {
	var st sumState
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("daemons: sum restore: %w", err)
	}
	if st.Open == nil {
		st.Open = map[string]*WindowTotal{}
	}
	s.state = st
	return nil
}

// number parses a JSON number (not a string) as float64.
func number(raw json.RawMessage) (float64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] == '"' {
		return 0, false
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, false
	}
	f, err := n.Float64()
	return f, err == nil
}

// integer parses a JSON integer exactly (Unix nanoseconds do not fit a
// float64's 53-bit mantissa).
func integer(raw json.RawMessage) (int64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] == '"' {
		return 0, false
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, false
	}
	v, err := n.Int64()
	return v, err == nil
}

// mod is the non-negative remainder, so windows of negative times align too.
func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}
