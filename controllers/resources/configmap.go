package resources

import (
	"encoding/json"
	"fmt"
	"path"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/engine/identity"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
)

// Paths inside a node pod.
const (
	ConfigDir      = "/etc/mesh"
	DataDir        = "/var/lib/mesh"
	CredentialsDir = "/etc/mesh/adapter-credentials"
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
// error, so a node never starts on a file it would reject.
func UpdateConfigMap(mc *meshv1.MeshCluster, cm *corev1.ConfigMap, operatorPublicKey []byte) error {
	c := NodeConfig(mc)
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
