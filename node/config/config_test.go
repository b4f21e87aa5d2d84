package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func validConfig() *Config {
	return &Config{
		Cluster:     "demo",
		Shards:      8,
		AckPolicy:   "Leader",
		Lease:       Duration{2 * time.Second},
		Storage:     Storage{Mode: "Memory", Fsync: "Never"},
		Credentials: Credentials{OperatorPublicKey: "/k/op.pub", ClusterKey: "/k/cluster.key"},
	}
}

func TestValidConfigParsesBack(t *testing.T) {
	data := []byte(`{"cluster":"demo","shards":8,"ackPolicy":"Standby","lease":"2s",
		"retention":{"maxAge":"24h"},"storage":{"mode":"Disk","dir":"/d","fsync":"EveryN","fsyncEveryN":10},
		"daemons":[{"name":"c","kind":"counter","shards":[0,7]}],
		"credentials":{"operatorPublicKey":"/k/op.pub","clusterKey":"/k/cluster.key"}}`)
	c, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if c.Lease.Duration != 2*time.Second || c.Retention.MaxAge.Duration != 24*time.Hour {
		t.Fatalf("durations not decoded: lease %s, maxAge %s", c.Lease.Duration, c.Retention.MaxAge.Duration)
	}
}

func TestInvalidConfigNamesTheField(t *testing.T) {
	cases := map[string]struct {
		mutate func(*Config)
		field  string
	}{
		"no cluster":       {func(c *Config) { c.Cluster = "" }, "cluster"},
		"no shard":         {func(c *Config) { c.Shards = 0 }, "shards"},
		"too many shards":  {func(c *Config) { c.Shards = 70000 }, "shards"},
		"bad ack policy":   {func(c *Config) { c.AckPolicy = "Quorum" }, "ackPolicy"},
		"no lease":         {func(c *Config) { c.Lease = Duration{} }, "lease"},
		"disk without dir": {func(c *Config) { c.Storage.Mode = "Disk" }, "storage.dir"},
		"unknown mode":     {func(c *Config) { c.Storage.Mode = "Tape" }, "storage.mode"},
		"EveryN without N": {func(c *Config) { c.Storage.Fsync = "EveryN" }, "storage.fsyncEveryN"},
		"repair in memory": {func(c *Config) { c.Storage.RepairCorruptLogs = true }, "storage.repairCorruptLogs"},
		"adapter no url":   {func(c *Config) { c.Adapter = &Adapter{Type: "Redis"} }, "adapter.url"},
		"daemon off shard": {func(c *Config) { c.Daemons = []Daemon{{Name: "d", Kind: "counter", Shards: []int{8}}} }, "daemons[0].shards[0]"},
		"duplicate daemon": {func(c *Config) { c.Daemons = []Daemon{{Name: "d", Kind: "counter"}, {Name: "d", Kind: "sum"}} }, "daemons[1].name"},
		"no operator key":  {func(c *Config) { c.Credentials.OperatorPublicKey = "" }, "credentials.operatorPublicKey"},
		"no cluster key":   {func(c *Config) { c.Credentials.ClusterKey = "" }, "credentials.clusterKey"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(c)
			err := c.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("want a *FieldError, got %v", err)
			}
			if fe.Field != tc.field {
				t.Fatalf("want field %q, got %q (%v)", tc.field, fe.Field, err)
			}
		})
	}
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
}

func TestUnknownFieldIsAnError(t *testing.T) {
	_, err := Parse([]byte(`{"cluster":"demo","shard":8}`))
	if err == nil || !strings.Contains(err.Error(), `unknown field "shard"`) {
		t.Fatalf("want unknown field error, got %v", err)
	}
}

func TestDurationMustBeAString(t *testing.T) {
	_, err := Parse([]byte(`{"cluster":"demo","shards":1,"ackPolicy":"Leader","lease":2000,"storage":{"mode":"Memory","fsync":"Never"}}`))
	if err == nil || !strings.Contains(err.Error(), "duration must be a string") {
		t.Fatalf("want a duration error, got %v", err)
	}
}

func TestRulesAreValidatedWithTheirIndex(t *testing.T) {
	data := []byte(`{"cluster":"demo","shards":8,"ackPolicy":"Leader","lease":"2s",
		"storage":{"mode":"Memory","fsync":"Never"},
		"credentials":{"operatorPublicKey":"/k/op.pub","clusterKey":"/k/cluster.key"},
		"rules":[{"name":"big","require":{"field":"v","op":"le","value":18446744073709551615}},
		         {"name":"rate","rateLimit":{"key":"device","max":10,"window":"1s"}}]}`)
	c, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(c.Rules) != 2 || string(c.Rules[0].Require.Value) != "18446744073709551615" {
		t.Fatalf("rules not decoded exactly: %+v", c.Rules)
	}
	c.Rules = append(c.Rules, c.Rules[0]) // duplicate name
	c.Rules[1].RateLimit.Max = 0
	err = c.Validate()
	var fields []string
	for _, e := range unjoin(err) {
		var fe *FieldError
		if errors.As(e, &fe) {
			fields = append(fields, fe.Field)
		}
	}
	if strings.Join(fields, ",") != "rules[1],rules[2]" {
		t.Fatalf("want errors for rules[1] and rules[2], got %v (%v)", fields, err)
	}
	if _, err := Parse([]byte(`{"cluster":"demo","shards":8,"ackPolicy":"Leader","lease":"2s",
		"storage":{"mode":"Memory","fsync":"Never"},"credentials":{"operatorPublicKey":"a","clusterKey":"b"},
		"rules":[{"name":"x","require":{"field":"v","op":"exists","typo":1}}]}`)); err == nil {
		t.Fatal("unknown field inside a rule accepted")
	}
}

// "Untrusted-input panics in subnet config": bad subnet input in the node
// config is a field error, never a panic.
func TestUntrustedSubnetConfigIsAFieldError(t *testing.T) {
	base := `{"cluster":"demo","shards":8,"ackPolicy":"Leader","lease":"2s",
		"storage":{"mode":"Memory","fsync":"Never"},"credentials":{"operatorPublicKey":"a","clusterKey":"b"},`
	c, err := Parse([]byte(base + `"subnets":{"policy":[{"label":"region","level":0,"values":{"eu":1}}],"exports":{"alerts":["1.2"]}}}`))
	if err != nil {
		t.Fatalf("valid subnets refused: %v", err)
	}
	if _, _, err := c.Subnets.Gateway(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		`"subnets":{"policy":[{"label":"region","level":4,"values":{"eu":1}}]}}`,
		`"subnets":{"policy":[{"label":"region","level":0,"values":{"eu":0}}]}}`,
		`"subnets":{"exports":{"alerts":["1.0.2"]}}}`,
		`"subnets":{"exports":{"alerts":["1.2.3.4.5"]}}}`,
		`"subnets":{"exports":{"":["1"]}}}`,
	} {
		_, err := Parse([]byte(base + bad))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "subnets" {
			t.Errorf("%s: want a subnets field error, got %v", bad, err)
		}
	}
	if _, err := Parse([]byte(base + `"subnets":{"policy":[{"label":"region","level":0,"values":{"eu":256}}]}}`)); err == nil {
		t.Error("a level value above 255 accepted")
	}
}

func TestDataAuthDefaultsToTokenAndNoneIsExplicit(t *testing.T) {
	c := validConfig()
	if got := c.DataAuthMode(); got != DataAuthToken {
		t.Fatalf("absent dataAuth: mode %q, want %q", got, DataAuthToken)
	}
	for _, mode := range []string{DataAuthToken, DataAuthNone} {
		c.DataAuth = &DataAuth{Mode: mode}
		if err := c.Validate(); err != nil || c.DataAuthMode() != mode {
			t.Fatalf("mode %q: %v, effective %q", mode, err, c.DataAuthMode())
		}
	}
	for _, mode := range []string{"", "none", "Off"} {
		c.DataAuth = &DataAuth{Mode: mode}
		var fe *FieldError
		if err := c.Validate(); !errors.As(err, &fe) || fe.Field != "dataAuth.mode" {
			t.Fatalf("mode %q: want a field error on dataAuth.mode, got %v", mode, err)
		}
	}
	parsed, err := Parse([]byte(`{"cluster":"demo","shards":8,"ackPolicy":"Leader","lease":"2s",
		"storage":{"mode":"Memory","fsync":"Never"},"dataAuth":{"mode":"None"},
		"credentials":{"operatorPublicKey":"/k/op.pub","clusterKey":"/k/cluster.key"}}`))
	if err != nil || parsed.DataAuthMode() != DataAuthNone {
		t.Fatalf("parse dataAuth None: %v", err)
	}
}
