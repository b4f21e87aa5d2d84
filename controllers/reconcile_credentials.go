package controllers

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/resources"
	"github.com/purplerain/mesh-operator/engine/identity"
)

// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch

// reconcileCredentials makes sure the cluster's two key Secrets exist and
// returns the operator's key pair. An existing Secret is never
// overwritten here: replacing a key at once would lock the operator out of
// running nodes (or nodes out of each other); a rotation replaces them in
// steps the nodes follow (reconcile_rotation.go). A Secret that exists but
// does not hold a valid key is an error the user must fix.
func (r *MeshClusterReconciler) reconcileCredentials(ctx context.Context, mc *meshv1.MeshCluster) (*identity.KeyPair, error) {
	operatorKey, err := r.ensureKeySecret(ctx, mc, resources.OperatorKeySecretName(mc))
	if err != nil {
		return nil, err
	}
	clusterKey, err := r.ensureKeySecret(ctx, mc, resources.ClusterKeySecretName(mc))
	if err != nil {
		return nil, err
	}
	serverKeys, err := r.serverKeys(ctx, mc, clusterKey)
	if err != nil {
		return nil, err
	}
	if err := r.ensureDataKeySecret(ctx, mc, operatorKey, serverKeys); err != nil {
		return nil, err
	}
	return operatorKey, nil
}

// serverKeys are the keys nodes may sign wire session handshakes with, as
// the data Secret publishes them for clients to pin: the cluster key, or,
// while a rotation is in flight (its record on the operator-key Secret),
// the old and the new one, since nodes switch their signing keys one at a
// time and a pod that restarts loads whichever the cluster-key Secret held.
func (r *MeshClusterReconciler) serverKeys(ctx context.Context, mc *meshv1.MeshCluster, clusterKey *identity.KeyPair) ([]ed25519.PublicKey, error) {
	secret := &corev1.Secret{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resources.OperatorKeySecretName(mc)}, secret); err != nil {
		return nil, fmt.Errorf("get secret %s: %w", resources.OperatorKeySecretName(mc), err)
	}
	rot, err := readRotation(secret)
	if err != nil {
		return nil, err
	}
	if rot.phase != "" {
		return []ed25519.PublicKey{rot.clusterOld.PublicKey(), rot.clusterNew.PublicKey()}, nil
	}
	return []ed25519.PublicKey{clusterKey.PublicKey()}, nil
}

// dataGrantTTL is the life of the data grants the operator signs
// (resources.DataGrantTTL; tests shorten it, export_test.go).
var dataGrantTTL atomic.Int64

func init() { dataGrantTTL.Store(int64(resources.DataGrantTTL)) }

func (r *MeshClusterReconciler) ensureKeySecret(ctx context.Context, mc *meshv1.MeshCluster, name string) (*identity.KeyPair, error) {
	secret := &corev1.Secret{}
	err := r.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: name}, secret)
	switch {
	case err == nil:
		return keyFromSecret(mc, secret)
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("get secret %s: %w", name, err)
	}
	kp, err := identity.Generate(nil)
	if err != nil {
		return nil, fmt.Errorf("generate key for %s: %w", name, err)
	}
	secret, err = resources.KeySecret(mc, name, kp)
	if err != nil {
		return nil, err
	}
	if err := controllerutil.SetControllerReference(mc, secret, r.Scheme); err != nil {
		return nil, err
	}
	if err := r.Create(ctx, secret); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// Another reconcile won the race; use its key.
			return r.ensureKeySecret(ctx, mc, name)
		}
		return nil, fmt.Errorf("create secret %s: %w", name, err)
	}
	r.Recorder.Eventf(mc, secret, corev1.EventTypeNormal, "Created", "Create", "created Secret %s", name)
	return kp, nil
}

// keyFromSecret is the key pair an existing key Secret of mc holds: its
// current key (during a credential rotation the record's current one, the
// key the operator signs with; reconcile_rotation.go).
func keyFromSecret(mc *meshv1.MeshCluster, secret *corev1.Secret) (*identity.KeyPair, error) {
	if owner := metav1.GetControllerOf(secret); owner != nil && owner.UID != mc.UID {
		return nil, fmt.Errorf("secret %s belongs to an earlier cluster of the same name; waiting for it to be garbage collected", secret.Name)
	}
	kp, err := identity.KeyPairFromSecretData(secret.Data)
	if err != nil {
		return nil, fmt.Errorf("secret %s holds no valid key (delete it to have a new one made): %w", secret.Name, err)
	}
	return kp, nil
}

// loadOperatorKey reads the operator key a pass signs with, as
// reconcileCredentials returns it (rotation included), without creating
// or changing any Secret: a paused cluster needs it to have its leases
// renewed. Nil without an error when the Secret does not exist (no node
// was given a key to trust, so there is nothing to renew).
func (r *MeshClusterReconciler) loadOperatorKey(ctx context.Context, mc *meshv1.MeshCluster) (*identity.KeyPair, error) {
	name := resources.OperatorKeySecretName(mc)
	secret := &corev1.Secret{}
	err := r.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: name}, secret)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get secret %s: %w", name, err)
	}
	return keyFromSecret(mc, secret)
}

// ensureDataKeySecret makes sure the cluster's data-API credentials exist
// (a data key and the operator's grant to it), creating them once, and
// keeps what they publish current: the server keys (serverKeys) and the
// grant, re-signed in place with the same data key once less than
// resources.DataGrantRenewFraction of its life is left. The data key is
// never replaced (applications hold tokens delegated from it); credentials
// whose grant another key signed (a replaced operator key) are reported
// with a Warning Event, since data clients are then refused, but do not
// stop the reconcile: the admin side still works.
func (r *MeshClusterReconciler) ensureDataKeySecret(ctx context.Context, mc *meshv1.MeshCluster, operatorKey *identity.KeyPair, serverKeys []ed25519.PublicKey) error {
	name := resources.DataKeySecretName(mc)
	secret := &corev1.Secret{}
	err := r.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: name}, secret)
	switch {
	case err == nil:
		if owner := metav1.GetControllerOf(secret); owner != nil && owner.UID != mc.UID {
			return fmt.Errorf("secret %s belongs to an earlier cluster of the same name; waiting for it to be garbage collected", name)
		}
		return r.refreshDataKeySecret(ctx, mc, secret, operatorKey, serverKeys)
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("get secret %s: %w", name, err)
	}
	dc, err := identity.NewDataCredentials(operatorKey, time.Duration(dataGrantTTL.Load()), time.Now())
	if err != nil {
		return fmt.Errorf("make data credentials for %s: %w", name, err)
	}
	dc.ServerKeys = serverKeys
	if secret, err = resources.DataKeySecret(mc, dc); err != nil {
		return err
	}
	if err := controllerutil.SetControllerReference(mc, secret, r.Scheme); err != nil {
		return err
	}
	if err := r.Create(ctx, secret); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return nil // another reconcile made them; the next one checks them
		}
		return fmt.Errorf("create secret %s: %w", name, err)
	}
	r.Recorder.Eventf(mc, secret, corev1.EventTypeNormal, "Created", "Create", "created Secret %s", name)
	return nil
}

// refreshDataKeySecret checks existing data credentials and patches what
// is stale in them: the server keys, and a grant near its end (a grant the
// operator key signed, checked at its start, so an expired one is renewed
// too: clients were refused, and are accepted again once they reload).
func (r *MeshClusterReconciler) refreshDataKeySecret(ctx context.Context, mc *meshv1.MeshCluster, secret *corev1.Secret, operatorKey *identity.KeyPair, serverKeys []ed25519.PublicKey) error {
	dc, err := identity.DataCredentialsFromSecretData(secret.Data)
	if err == nil {
		err = dc.Check(identity.NewVerifier([]ed25519.PublicKey{operatorKey.PublicKey()}), dc.Grant.Leaf().NotBefore)
	}
	if err != nil {
		r.Recorder.Eventf(mc, secret, corev1.EventTypeWarning, "DataCredentialsInvalid", "Verify",
			"Secret %s holds no valid data-API credentials (delete it to have new ones made): %v", secret.Name, err)
		// The server keys are still worth publishing: they do not depend
		// on the grant.
		return r.patchServerKeys(ctx, secret, dc, serverKeys)
	}
	now := time.Now()
	if resources.DataGrantRenewDue(dc.Grant, now) {
		grant, err := operatorKey.TryIssue(identity.Grant{Subject: dc.Key.PublicKey(), Scope: identity.DataScope, TTL: time.Duration(dataGrantTTL.Load()), Delegation: 1}, now)
		if err != nil {
			return fmt.Errorf("renew the data grant: %w", err)
		}
		if err := r.patchData(ctx, secret, map[string][]byte{identity.SecretGrant: []byte(grant.EncodeHeader())}); err != nil {
			return fmt.Errorf("renew the data grant in secret %s: %w", secret.Name, err)
		}
		r.Recorder.Eventf(mc, secret, corev1.EventTypeNormal, "DataGrantRenewed", "Renew",
			"re-signed the data grant in Secret %s (the old one ends at %s, the new one at %s): applications load the Secret again to keep working",
			secret.Name, dc.Grant.NotAfter().UTC().Format(time.RFC3339), grant.NotAfter().UTC().Format(time.RFC3339))
	}
	return r.patchServerKeys(ctx, secret, dc, serverKeys)
}

// patchServerKeys writes serverKeys to the data Secret unless it holds
// them already (dc: its credentials as read, nil if unreadable).
func (r *MeshClusterReconciler) patchServerKeys(ctx context.Context, secret *corev1.Secret, dc *identity.DataCredentials, serverKeys []ed25519.PublicKey) error {
	if dc != nil && slices.EqualFunc(dc.ServerKeys, serverKeys, func(a, b ed25519.PublicKey) bool { return a.Equal(b) }) {
		return nil
	}
	raw, err := identity.EncodeServerKeys(serverKeys)
	if err != nil {
		return err
	}
	if err := r.patchData(ctx, secret, map[string][]byte{identity.SecretServerKeys: raw}); err != nil {
		return fmt.Errorf("publish the server keys in secret %s: %w", secret.Name, err)
	}
	return nil
}

// patchData merges data into secret's (a patch of what the caller
// decided from the content it read, so repeating it is harmless).
func (r *MeshClusterReconciler) patchData(ctx context.Context, secret *corev1.Secret, data map[string][]byte) error {
	patch, err := json.Marshal(map[string]any{"data": data})
	if err != nil {
		return err
	}
	return r.Patch(ctx, secret, client.RawPatch(types.MergePatchType, patch))
}

// publishServerKeys writes serverKeys to the data Secret, if it exists
// and they changed: the rotation calls it as it begins (old and new
// cluster key, before any node signs with the new one) and ends (the new
// one only).
func (r *MeshClusterReconciler) publishServerKeys(ctx context.Context, mc *meshv1.MeshCluster, serverKeys []ed25519.PublicKey) error {
	secret := &corev1.Secret{}
	err := r.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resources.DataKeySecretName(mc)}, secret)
	if apierrors.IsNotFound(err) {
		return nil // reconcileCredentials makes it, with the keys of the moment
	}
	if err != nil {
		return fmt.Errorf("get secret %s: %w", resources.DataKeySecretName(mc), err)
	}
	dc, _ := identity.DataCredentialsFromSecretData(secret.Data)
	return r.patchServerKeys(ctx, secret, dc, serverKeys)
}
