package controllers

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	if _, err := r.ensureKeySecret(ctx, mc, resources.ClusterKeySecretName(mc)); err != nil {
		return nil, err
	}
	if err := r.ensureDataKeySecret(ctx, mc, operatorKey); err != nil {
		return nil, err
	}
	return operatorKey, nil
}

func (r *MeshClusterReconciler) ensureKeySecret(ctx context.Context, mc *meshv1.MeshCluster, name string) (*identity.KeyPair, error) {
	secret := &corev1.Secret{}
	err := r.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: name}, secret)
	switch {
	case err == nil:
		if owner := metav1.GetControllerOf(secret); owner != nil && owner.UID != mc.UID {
			return nil, fmt.Errorf("secret %s belongs to an earlier cluster of the same name; waiting for it to be garbage collected", name)
		}
		kp, err := identity.KeyPairFromSecretData(secret.Data)
		if err != nil {
			return nil, fmt.Errorf("secret %s holds no valid key (delete it to have a new one made): %w", name, err)
		}
		return kp, nil
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

// ensureDataKeySecret makes sure the cluster's data-API credentials exist
// (a data key and the operator's grant to it), creating them once. Existing
// credentials are never overwritten (applications hold tokens delegated
// from them); one whose grant no longer verifies under the operator key
// (a replaced operator key, an expired grant) is reported with a Warning
// Event, since data clients are then refused, but does not stop the
// reconcile: the admin side still works.
func (r *MeshClusterReconciler) ensureDataKeySecret(ctx context.Context, mc *meshv1.MeshCluster, operatorKey *identity.KeyPair) error {
	name := resources.DataKeySecretName(mc)
	secret := &corev1.Secret{}
	err := r.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: name}, secret)
	switch {
	case err == nil:
		if owner := metav1.GetControllerOf(secret); owner != nil && owner.UID != mc.UID {
			return fmt.Errorf("secret %s belongs to an earlier cluster of the same name; waiting for it to be garbage collected", name)
		}
		dc, err := identity.DataCredentialsFromSecretData(secret.Data)
		if err == nil {
			err = dc.Check(identity.NewVerifier([]ed25519.PublicKey{operatorKey.PublicKey()}), time.Now())
		}
		if err != nil {
			r.Recorder.Eventf(mc, secret, corev1.EventTypeWarning, "DataCredentialsInvalid", "Verify",
				"Secret %s holds no valid data-API credentials (delete it to have new ones made): %v", name, err)
		}
		return nil
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("get secret %s: %w", name, err)
	}
	dc, err := identity.NewDataCredentials(operatorKey, resources.DataGrantTTL, time.Now())
	if err != nil {
		return fmt.Errorf("make data credentials for %s: %w", name, err)
	}
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
