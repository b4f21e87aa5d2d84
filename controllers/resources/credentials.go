package resources

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/engine/identity"
)

// Credentials: two key pairs per cluster, each in its own Secret.
//
//   - The operator key signs the short-lived admin tokens the operator sends
//     to nodes. Only the operator reads its Secret; nodes get the public half
//     through the ConfigMap.
//   - The cluster key is shared by the cluster's nodes: they sign and verify
//     the tokens they present to each other for replication. It is mounted
//     into every node pod.
//
// The operator creates each Secret once and changes it only to rotate the
// keys (the mesh.purplerain.io/rotate-credentials annotation): the
// operator-key Secret is the rotation's record (RotationAnnotation and
// friends, and the keys in flight under the Rotation*Key data keys); the
// cluster-key Secret only ever holds the key pods load at start.

// Paths of the credential files inside a node pod.
const (
	OperatorPublicKeyFile = "operator.pub" // in the ConfigMap, under ConfigDir
	ClusterKeyDir         = "/etc/mesh-cluster"
	clusterKeyVolume      = "cluster-key"
)

// DataKeySecretName holds the cluster's data-API credentials: a data key
// pair and the operator's grant to it (identity.DataCredentials), and the
// public keys nodes sign wire session handshakes with
// (identity.SecretServerKeys: the cluster key, both the old and the new one
// while a credential rotation is in flight). Nodes do not mount it: they
// verify data tokens with the operator's public key. Applications (and the
// SDK, client.Options.Credentials) read it, delegate themselves
// short-lived tokens for the data API and pin the nodes' keys.
func DataKeySecretName(mc *meshv1.MeshCluster) string { return mc.Name + "-data-key" }

// DataGrantTTL is how long the operator's grant to the data key is valid.
// Deleting the data Secret has the operator make a new key and grant; a
// credential rotation re-signs the grant with the new operator key
// (controllers/reconcile_rotation.go); and the operator re-signs it in
// place, keeping the data key, once less than DataGrantRenewFraction of
// its life is left (DataGrantRenewDue), so applications that load the
// Secret again never meet an expired grant.
const DataGrantTTL = 5 * 365 * 24 * time.Hour

// DataGrantRenewFraction is the part of the data grant's life left when
// the operator re-signs it.
const DataGrantRenewFraction = 0.2

// DataGrantRenewDue says whether grant (a single-link operator grant) has
// less than DataGrantRenewFraction of its life left at now, or expired.
func DataGrantRenewDue(grant *identity.Token, now time.Time) bool {
	l := grant.Leaf()
	life := l.NotAfter.Sub(l.NotBefore)
	return l.NotAfter.Sub(now) < time.Duration(float64(life)*DataGrantRenewFraction)
}

// DataKeySecret wraps data credentials as a Secret of the cluster.
func DataKeySecret(mc *meshv1.MeshCluster, dc *identity.DataCredentials) (*corev1.Secret, error) {
	data, err := dc.SecretData()
	if err != nil {
		return nil, err
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: DataKeySecretName(mc), Namespace: mc.Namespace, Labels: Labels(mc)},
		Type:       corev1.SecretTypeOpaque,
		Data:       data,
	}, nil
}

// OperatorKeySecretName holds the operator's key pair for a cluster.
func OperatorKeySecretName(mc *meshv1.MeshCluster) string { return mc.Name + "-operator-key" }

// ClusterKeySecretName holds the cluster's node-to-node key pair.
func ClusterKeySecretName(mc *meshv1.MeshCluster) string { return mc.Name + "-cluster-key" }

// KeySecret wraps a key pair as a Secret of the cluster.
func KeySecret(mc *meshv1.MeshCluster, name string, kp *identity.KeyPair) (*corev1.Secret, error) {
	data, err := kp.ToSecretData()
	if err != nil {
		return nil, err
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: mc.Namespace, Labels: Labels(mc)},
		Type:       corev1.SecretTypeOpaque,
		Data:       data,
	}, nil
}

// Credential rotation record, on the operator-key Secret. The Secret is
// the single source of truth of a rotation in flight (one object, updated
// with optimistic locking, so a pass that read a stale cache cannot move
// the rotation backwards); status.credentials mirrors what finished.
const (
	// RotationAnnotation is the rotate-credentials value being handled,
	// or the last one handled once RotationPhaseAnnotation is gone.
	RotationAnnotation = "mesh.purplerain.io/rotation"
	// RotationPhaseAnnotation is the step the rotation is at: Trust,
	// Switch or Drop (absent: none in flight).
	RotationPhaseAnnotation = "mesh.purplerain.io/rotation-phase"
	// RotationSwitchedAnnotation is when every node switched to the new
	// keys (RFC 3339); the old ones are dropped a grace period later.
	RotationSwitchedAnnotation = "mesh.purplerain.io/rotation-switched-at"
	// RotationTrustedAnnotation is when every node trusted the new keys
	// and the data Secret named both cluster keys (RFC 3339); nodes switch
	// their signing key a grace period later, so clients that pin the
	// Secret's server keys can load it again first.
	RotationTrustedAnnotation = "mesh.purplerain.io/rotation-trusted-at"

	// Operator-key Secret data during a rotation (PKCS#8 PEM): the next
	// operator key (phase Trust) or the previous one (Switch, Drop), and
	// the old and new cluster keys.
	RotationOperatorNextKey     = "operator-next.key"
	RotationOperatorPreviousKey = "operator-previous.key"
	RotationClusterOldKey       = "cluster-old.key"
	RotationClusterNewKey       = "cluster-new.key"
)
