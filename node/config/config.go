// Package config is the mesh-node configuration: the file the operator
// renders into each cluster's ConfigMap and every node reads at start.
//
// The operator builds a Config from the MeshCluster spec; a node loads it
// with Load, which rejects an invalid file with an error naming the field.
// Per-pod values (node name, addresses) come from flags or the environment,
// not from this shared file. The package imports no Kubernetes code so the
// node stays free of it.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/purplerain/mesh-operator/engine/rules"
	"github.com/purplerain/mesh-operator/engine/subnet"
)

// FileName is the name of the configuration file inside the mounted
// ConfigMap.
const FileName = "node.json"

// Ports every node listens on.
const (
	AdminPort = 9440 // admin API: health, readiness, metrics, status, topology
	DataPort  = 9441 // data API over HTTP/JSON
	WirePort  = 9442 // data and replication API over the binary wire codec
)

// Config is the cluster-wide node configuration.
type Config struct {
	// Cluster is the MeshCluster name.
	Cluster string `json:"cluster"`
	// Shards is the number of base shards.
	Shards int `json:"shards"`
	// AckPolicy is "Leader" or "Standby".
	AckPolicy string `json:"ackPolicy"`
	// Lease is how long an owner accepts writes without a topology push.
	Lease Duration `json:"lease"`
	// Retention bounds each shard's log; zero values mean unbounded.
	Retention Retention `json:"retention"`
	// Storage is where shard logs live.
	Storage Storage `json:"storage"`
	// Adapter optionally mirrors shards to an external system.
	Adapter *Adapter `json:"adapter,omitempty"`
	// Daemons run on the shards they select.
	Daemons []Daemon `json:"daemons,omitempty"`
	// Credentials are the mounted key files.
	Credentials Credentials `json:"credentials"`
	// Rules are the behaviour rules every ingest must pass (engine/rules
	// Spec JSON); empty means none. Validated with rules.Compile.
	Rules []rules.Spec `json:"rules,omitempty"`
	// Subnets optionally places nodes in the 4-level subnet hierarchy.
	Subnets *Subnets `json:"subnets,omitempty"`
	// DataAuth says how the data API (HTTP and binary) authenticates
	// clients. Absent means mode Token: turning authentication off takes
	// an explicit {"mode": "None"}.
	DataAuth *DataAuth `json:"dataAuth,omitempty"`
}

// Data-API authentication modes.
const (
	// DataAuthToken: every data-API request carries a permission token
	// whose root link the operator key (credentials.operatorPublicKey)
	// signed, with at most one delegated link below it (the cluster's data
	// key, see identity.DataCredentials); ingest needs
	// identity.ScopeIngest, poll identity.ScopeConsume, the topology
	// either.
	DataAuthToken = "Token"
	// DataAuthNone: the data API accepts anyone. For local use and tests
	// only; the operator never renders it.
	DataAuthNone = "None"
)

// DataAuth is the data-API authentication section.
type DataAuth struct {
	// Mode is "Token" or "None".
	Mode string `json:"mode"`
}

// DataAuthMode is the effective data-API authentication mode: Token unless
// the section says None.
func (c *Config) DataAuthMode() string {
	if c.DataAuth == nil {
		return DataAuthToken
	}
	return c.DataAuth.Mode
}

// Subnets is the subnet assignment policy and the gateway's exports.
//
// A node assigns its own subnet at start: it reads its pod's labels from
// LabelsFile (the downward API file the operator mounts) and applies
// Policy (subnet.Policy.Assign); the admin status reports the result.
//
// TODO(issue 11): visibility filtering (subnet.Gateway.Visible with
// Exports) has nothing to filter yet: data API events carry no channel and no
// origin subnet, and no path forwards events between nodes other than
// replication of a shard to its followers. Filter deliveries by channel
// visibility once channels exist; until then Exports is validated only.
type Subnets struct {
	// Policy maps node labels onto levels, applied in order.
	Policy []subnet.Rule `json:"policy,omitempty"`
	// Exports lists, per channel, the subnets ("3.7") Exported traffic may
	// reach.
	Exports map[string][]string `json:"exports,omitempty"`
	// LabelsFile is the pod's labels in the downward API format (one
	// key="quoted value" a line). Empty: the node has no labels, so it
	// is assigned the global subnet.
	LabelsFile string `json:"labelsFile,omitempty"`
}

// Assign returns the node's subnet: Policy applied to the labels in
// LabelsFile. Every step is fallible (an unreadable file, a malformed
// line, a policy that leaves a gap between levels) and says which.
func (s *Subnets) Assign() (subnet.ID, error) {
	policy, err := subnet.NewPolicy(s.Policy)
	if err != nil {
		return 0, fmt.Errorf("subnets.policy: %w", err)
	}
	labels := map[string]string{}
	if s.LabelsFile != "" {
		data, err := os.ReadFile(s.LabelsFile)
		if err != nil {
			return 0, fmt.Errorf("subnets.labelsFile: %w", err)
		}
		if labels, err = ParseLabels(data); err != nil {
			return 0, fmt.Errorf("subnets.labelsFile %s: %w", s.LabelsFile, err)
		}
	}
	id, err := policy.Assign(labels)
	if err != nil {
		return 0, fmt.Errorf("subnets: %w", err)
	}
	return id, nil
}

// ParseLabels reads labels in the downward API file format: one
// key="value" a line, the value a Go-quoted string.
func ParseLabels(data []byte) (map[string]string, error) {
	labels := map[string]string{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("line %d: want key=\"value\", got %q", i+1, line)
		}
		value, err := strconv.Unquote(v)
		if err != nil {
			return nil, fmt.Errorf("line %d: label %s: value is not a quoted string: %w", i+1, k, err)
		}
		labels[k] = value
	}
	return labels, nil
}

// Gateway builds the subnet policy and gateway with the fallible
// constructors (Validate has already reported what is wrong).
func (s *Subnets) Gateway() (*subnet.Policy, *subnet.Gateway, error) {
	policy, err := subnet.NewPolicy(s.Policy)
	if err != nil {
		return nil, nil, err
	}
	exports := map[string][]subnet.ID{}
	for ch, ids := range s.Exports {
		for _, text := range ids {
			id, err := subnet.Parse(text)
			if err != nil {
				return nil, nil, fmt.Errorf("exports[%q]: %w", ch, err)
			}
			exports[ch] = append(exports[ch], id)
		}
	}
	gw, err := subnet.NewGateway(exports)
	if err != nil {
		return nil, nil, err
	}
	return policy, gw, nil
}

// Credentials name the key files the operator mounts from its Secrets.
type Credentials struct {
	// OperatorPublicKey (PEM) verifies the operator's admin tokens.
	OperatorPublicKey string `json:"operatorPublicKey"`
	// ClusterKey (private key PEM, shared by the cluster's nodes) signs and
	// verifies the tokens nodes present to each other for replication.
	ClusterKey string `json:"clusterKey"`
}

// Retention bounds a shard's log.
type Retention struct {
	MaxEvents int64    `json:"maxEvents,omitempty"`
	MaxBytes  int64    `json:"maxBytes,omitempty"`
	MaxAge    Duration `json:"maxAge,omitempty"`
}

// Storage is where shard logs live.
type Storage struct {
	// Mode is "Memory" or "Disk".
	Mode string `json:"mode"`
	// Dir is the data directory (Disk mode).
	Dir string `json:"dir,omitempty"`
	// Fsync is "Never", "EveryN" or "Interval".
	Fsync         string   `json:"fsync"`
	FsyncEveryN   int      `json:"fsyncEveryN,omitempty"`
	FsyncInterval Duration `json:"fsyncInterval,omitempty"`
	// RepairCorruptLogs (Disk mode) cuts a shard log that is corrupt (not
	// merely torn) back to the last good record before the damage at
	// start, dropping everything after it, and logs what it dropped.
	// Without it a corrupt log stops the node at start. Set it for one
	// start only: see docs/operations.md, "Repairing a corrupt log".
	RepairCorruptLogs bool `json:"repairCorruptLogs,omitempty"`
}

// Adapter mirrors shards to an external system.
type Adapter struct {
	// Type is "JetStream" or "Redis".
	Type   string `json:"type"`
	URL    string `json:"url"`
	Prefix string `json:"prefix"`
	// CredentialsDir holds the mounted credential Secret, if any.
	CredentialsDir string `json:"credentialsDir,omitempty"`
}

// Daemon declares a daemon.
type Daemon struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Shards are the base shards the daemon runs on; empty means all.
	Shards []int             `json:"shards,omitempty"`
	Config map[string]string `json:"config,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("2s").
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"2s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// FieldError names the configuration field that is wrong.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Validate checks the configuration and returns every problem found, each a
// *FieldError.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	if c.Cluster == "" {
		bad("cluster", "must not be empty")
	}
	if c.Shards < 1 || c.Shards > 65535 {
		bad("shards", "must be between 1 and 65535, got %d", c.Shards)
	}
	if c.AckPolicy != "Leader" && c.AckPolicy != "Standby" {
		bad("ackPolicy", "must be Leader or Standby, got %q", c.AckPolicy)
	}
	if c.Lease.Duration <= 0 {
		bad("lease", "must be positive, got %s", c.Lease.Duration)
	}
	if c.Retention.MaxEvents < 0 {
		bad("retention.maxEvents", "must not be negative")
	}
	if c.Retention.MaxBytes < 0 {
		bad("retention.maxBytes", "must not be negative")
	}
	if c.Retention.MaxAge.Duration < 0 {
		bad("retention.maxAge", "must not be negative")
	}
	switch c.Storage.Mode {
	case "Memory":
	case "Disk":
		if c.Storage.Dir == "" {
			bad("storage.dir", "is required in Disk mode")
		}
	default:
		bad("storage.mode", "must be Memory or Disk, got %q", c.Storage.Mode)
	}
	switch c.Storage.Fsync {
	case "Never":
	case "EveryN":
		if c.Storage.FsyncEveryN < 1 {
			bad("storage.fsyncEveryN", "must be at least 1 when fsync is EveryN")
		}
	case "Interval":
		if c.Storage.FsyncInterval.Duration <= 0 {
			bad("storage.fsyncInterval", "must be positive when fsync is Interval")
		}
	default:
		bad("storage.fsync", "must be Never, EveryN or Interval, got %q", c.Storage.Fsync)
	}
	if c.Storage.RepairCorruptLogs && c.Storage.Mode != "Disk" {
		bad("storage.repairCorruptLogs", "applies to Disk mode only")
	}
	if a := c.Adapter; a != nil {
		if a.Type != "JetStream" && a.Type != "Redis" {
			bad("adapter.type", "must be JetStream or Redis, got %q", a.Type)
		}
		if a.URL == "" {
			bad("adapter.url", "must not be empty")
		}
	}
	if c.Credentials.OperatorPublicKey == "" {
		bad("credentials.operatorPublicKey", "is required: without it no admin call can be authenticated")
	}
	if c.Credentials.ClusterKey == "" {
		bad("credentials.clusterKey", "is required: without it nodes cannot replicate")
	}
	seen := map[string]bool{}
	for i, d := range c.Daemons {
		field := fmt.Sprintf("daemons[%d]", i)
		if d.Name == "" {
			bad(field+".name", "must not be empty")
		} else if seen[d.Name] {
			bad(field+".name", "duplicate daemon name %q", d.Name)
		}
		seen[d.Name] = true
		if d.Kind == "" {
			bad(field+".kind", "must not be empty")
		}
		for j, s := range d.Shards {
			if s < 0 || s >= c.Shards {
				bad(fmt.Sprintf("%s.shards[%d]", field, j), "shard %d is not a base shard (0..%d)", s, c.Shards-1)
			}
		}
	}
	if _, err := rules.Compile(c.Rules); err != nil {
		var ie *rules.IndexError
		for _, e := range unjoin(err) {
			if errors.As(e, &ie) {
				bad(fmt.Sprintf("rules[%d]", ie.Index), "%v", ie.Err)
			} else {
				bad("rules", "%v", e)
			}
		}
	}
	if a := c.DataAuth; a != nil && a.Mode != DataAuthToken && a.Mode != DataAuthNone {
		bad("dataAuth.mode", "must be %s or %s, got %q (omit the section for %s)", DataAuthToken, DataAuthNone, a.Mode, DataAuthToken)
	}
	if c.Subnets != nil {
		if _, _, err := c.Subnets.Gateway(); err != nil {
			bad("subnets", "%v", err)
		}
	}
	return errors.Join(errs...)
}

// unjoin splits an errors.Join result into its parts.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// Parse decodes and validates a configuration. Unknown fields are errors,
// so a typo does not silently fall back to a default.
func Parse(data []byte) (*Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("decode node config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("invalid node config: %w", err)
	}
	return &c, nil
}

// Load reads, decodes and validates the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read node config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}
