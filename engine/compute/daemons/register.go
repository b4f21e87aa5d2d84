package daemons

import (
	"encoding/json"
	"fmt"

	"github.com/purplerain/mesh-operator/engine/compute"
)

// Kind names of the built-in daemons.
const (
	KindCounter = "counter"
	KindSum     = "sum"
	KindTasks   = "tasks"
)

// Register adds the built-in kinds to k.
func Register(k *compute.Kinds) error {
	for kind, f := range map[string]compute.Factory{
		KindCounter: NewCounter,
		KindSum:     NewSum,
		KindTasks:   NewTasks,
	} {
		if err := k.Register(kind, f); err != nil {
			return err
		}
	}
	return nil
}

// Builtins returns a registry holding only the built-in kinds.
func Builtins() *compute.Kinds {
	k := compute.NewKinds()
	if err := Register(k); err != nil {
		panic(err) // a fresh registry cannot hold duplicates
	}
	return k
}

// Validate reports whether config is acceptable for a built-in kind, by
// building (and discarding) a daemon from it. The operator calls it to
// refuse a MeshCluster whose daemons[] entry would fail on the nodes.
func Validate(kind string, config []byte) error {
	_, err := Builtins().New(kind, "validate", config)
	return err
}

// decodeConfig unmarshals a JSON config, treating empty input as {}.
func decodeConfig(config []byte, v any) error {
	if len(config) == 0 {
		return nil
	}
	if err := json.Unmarshal(config, v); err != nil {
		return fmt.Errorf("daemons: bad config: %w", err)
	}
	return nil
}

// eventKey returns ev.Key, or the string form of fields[keyField].
func eventKey(ev compute.Event, fields map[string]json.RawMessage, keyField string) (string, bool) {
	if len(ev.Key) > 0 {
		return string(ev.Key), true
	}
	raw, ok := fields[keyField]
	if !ok {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, true
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err == nil {
		return n.String(), true
	}
	return "", false
}

// decodeFields parses a JSON object payload, or reports false.
func decodeFields(payload []byte) (map[string]json.RawMessage, bool) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(payload, &m); err != nil || m == nil {
		return nil, false
	}
	return m, true
}
