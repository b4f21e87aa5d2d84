package resources

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/rules"
	"github.com/purplerain/mesh-operator/engine/subnet"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
)

// Paths inside a node pod.
const (
	ConfigDir      = "/etc/mesh"
	DataDir        = "/var/lib/mesh"
	CredentialsDir = "/etc/mesh/adapter-credentials"
	// PodInfoDir holds the pod's own metadata from the downward API
	// (PodLabelsFile: its labels, read for the subnet assignment); mounted
	// only when spec.subnets is set.
	PodInfoDir    = "/etc/mesh-podinfo"
	PodLabelsFile = "labels"
)

// NodeConfig renders the cluster-wide node configuration from the spec.
func NodeConfig(mc *meshv1.MeshCluster) *nodeconfig.Config {
	s := &mc.Spec
	c := &nodeconfig.Config{
		Cluster:   mc.Name,
		Shards:    int(s.Shards.Count),
		AckPolicy: string(s.Standby.AckPolicy),
		Lease:     nodeconfig.Duration{Duration: s.Standby.LeaseDuration.Duration},
		Storage: nodeconfig.Storage{
			Mode:  string(s.Storage.Mode),
			Fsync: string(s.Storage.Fsync.Policy),
		},
	}
	if s.Storage.Mode == meshv1.StorageDisk {
		c.Storage.Dir = DataDir
	}
	c.Credentials = nodeconfig.Credentials{
		OperatorPublicKey: path.Join(ConfigDir, OperatorPublicKeyFile),
		ClusterKey:        path.Join(ClusterKeyDir, identity.SecretPrivateKey),
	}
	// Data-API tokens are always required in a cluster the operator runs;
	// dataAuth mode None exists for nodes run by hand.
	c.DataAuth = &nodeconfig.DataAuth{Mode: nodeconfig.DataAuthToken}
	if n := s.Storage.Fsync.EveryN; n != nil {
		c.Storage.FsyncEveryN = int(*n)
	}
	if d := s.Storage.Fsync.Interval; d != nil {
		c.Storage.FsyncInterval = nodeconfig.Duration{Duration: d.Duration}
	}
	if r := s.Retention.MaxEvents; r != nil {
		c.Retention.MaxEvents = *r
	}
	if r := s.Retention.MaxBytes; r != nil {
		c.Retention.MaxBytes = r.Value()
	}
	if r := s.Retention.MaxAge; r != nil {
		c.Retention.MaxAge = nodeconfig.Duration{Duration: r.Duration}
	}
	if a := s.Adapter; a != nil && a.Type != meshv1.AdapterNone {
		prefix := a.Prefix
		if prefix == "" {
			prefix = mc.Name
		}
		c.Adapter = &nodeconfig.Adapter{Type: string(a.Type), URL: a.URL, Prefix: prefix}
		if a.SecretRef != nil {
			c.Adapter.CredentialsDir = CredentialsDir
		}
	}
	if sn := s.Subnets; sn != nil {
		c.Subnets = &nodeconfig.Subnets{Exports: sn.Exports, LabelsFile: path.Join(PodInfoDir, PodLabelsFile)}
		for _, r := range sn.Policy {
			nr := subnet.Rule{Label: r.Label, Level: int(r.Level), Values: map[string]uint8{}}
			for v, n := range r.Values {
				// Out of range values become 0, which Validate refuses
				// ("means not specified") instead of wrapping silently.
				if n >= 1 && n <= 255 {
					nr.Values[v] = uint8(n)
				} else {
					nr.Values[v] = 0
				}
			}
			c.Subnets.Policy = append(c.Subnets.Policy, nr)
		}
	}
	for _, d := range s.Daemons {
		nd := nodeconfig.Daemon{Name: d.Name, Kind: string(d.Kind), Config: d.Config}
		if d.Shards != nil {
			for _, id := range d.Shards.IDs {
				nd.Shards = append(nd.Shards, int(id))
			}
		}
		c.Daemons = append(c.Daemons, nd)
	}
	return c
}

// RulesError says which of spec.rules is invalid and why; Index is its
// position in spec.rules.
type RulesError struct {
	Index int
	Name  string
	Err   error
}

func (e *RulesError) Error() string {
	// The engine's messages already start with `rule "name": `.
	msg := strings.TrimPrefix(e.Err.Error(), fmt.Sprintf("rule %q: ", e.Name))
	return fmt.Sprintf("rule %q (spec.rules[%d]): %s", e.Name, e.Index, msg)
}

func (e *RulesError) Unwrap() error { return e.Err }

// Rules converts spec.rules into the engine's rule specifications and
// compiles them (rules.Compile), so what the operator accepts is exactly
// what the nodes accept. Every invalid rule is reported (joined), each a
// *RulesError naming the rule. Conditions are decoded strictly: an
// unknown field (a typo) is an error, and numbers keep their exact text.
func Rules(mc *meshv1.MeshCluster) ([]rules.Spec, error) {
	specs := make([]rules.Spec, 0, len(mc.Spec.Rules))
	var errs []error
	for i, r := range mc.Spec.Rules {
		spec := rules.Spec{Name: r.Name}
		var err error
		if spec.When, err = decodeCondition(r.When); err != nil {
			err = fmt.Errorf("when: %w", err)
		} else if spec.Require, err = decodeCondition(r.Require); err != nil {
			err = fmt.Errorf("require: %w", err)
		}
		if err != nil {
			errs = append(errs, &RulesError{Index: i, Name: r.Name, Err: err})
			continue
		}
		if rl := r.RateLimit; rl != nil {
			// The CRD keeps max at 1 or more; a negative one would wrap.
			spec.RateLimit = &rules.RateLimit{Key: rl.Key, Max: uint64(max(rl.Max, 0)), Window: rules.Duration{Duration: rl.Window.Duration}}
		}
		specs = append(specs, spec)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if _, err := rules.Compile(specs); err != nil {
		// specs[i] is spec.rules[i] here: nothing was skipped.
		for _, e := range unjoin(err) {
			var ie *rules.IndexError
			if errors.As(e, &ie) && ie.Index < len(specs) {
				errs = append(errs, &RulesError{Index: ie.Index, Name: specs[ie.Index].Name, Err: ie.Err})
			} else {
				errs = append(errs, fmt.Errorf("spec.rules: %w", e))
			}
		}
		return nil, errors.Join(errs...)
	}
	return specs, nil
}

func decodeCondition(j *apiextensionsv1.JSON) (*rules.Condition, error) {
	if j == nil || len(j.Raw) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(j.Raw))
	dec.DisallowUnknownFields()
	var c rules.Condition
	if err := dec.Decode(&c); err != nil {
		return nil, err
	}
	return &c, nil
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// RenderedRules are the rules in the ConfigMap's node configuration (nil
// when there are none or it does not parse): the last valid spec.rules,
// which nodes load at start and the operator pushes to running nodes.
func RenderedRules(cm *corev1.ConfigMap) []rules.Spec {
	var c struct {
		Rules []rules.Spec `json:"rules"`
	}
	if cm == nil || json.Unmarshal([]byte(cm.Data[nodeconfig.FileName]), &c) != nil {
		return nil
	}
	return c.Rules
}

// ConfigMap holds the node configuration file and the operator's public
// key (PEM), which nodes verify admin tokens with.
func ConfigMap(mc *meshv1.MeshCluster, operatorPublicKey []byte) (*corev1.ConfigMap, error) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: ConfigMapName(mc), Namespace: mc.Namespace}}
	if err := UpdateConfigMap(mc, cm, operatorPublicKey); err != nil {
		return nil, err
	}
	return cm, nil
}

// UpdateConfigMap renders the node configuration into cm. A spec the API
// server accepted but that renders an invalid node configuration is an
// error, so a node never starts on a file it would reject. Invalid
// spec.rules are not: cm keeps the rules it holds (the last valid ones)
// and the reconciler reports the bad rule in the RulesValid condition.
func UpdateConfigMap(mc *meshv1.MeshCluster, cm *corev1.ConfigMap, operatorPublicKey []byte) error {
	if sn := mc.Spec.Subnets; sn != nil {
		// The CRD cannot bound map values; NodeConfig would render these
		// as 0 ("not specified").
		for i, r := range sn.Policy {
			for v, n := range r.Values {
				if n < 1 || n > 255 {
					return fmt.Errorf("render node config: spec.subnets.policy[%d].values[%q]: %d is not a level value (1..255)", i, v, n)
				}
			}
		}
	}
	c := NodeConfig(mc)
	if specs, err := Rules(mc); err == nil {
		c.Rules = specs
	} else {
		c.Rules = RenderedRules(cm)
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("render node config: %w", err)
	}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode node config: %w", err)
	}
	cm.Labels = mergeLabels(cm.Labels, Labels(mc))
	cm.Data = map[string]string{
		nodeconfig.FileName:   string(data) + "\n",
		OperatorPublicKeyFile: string(operatorPublicKey),
	}
	return nil
}
