package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/resources"
	"github.com/purplerain/mesh-operator/engine/identity"
)

// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create

// reconcileCredentials makes sure the cluster's two key Secrets exist and
// returns the operator's key pair. An existing Secret is never
// overwritten: replacing a key would lock the operator out of running
// nodes (or nodes out of each other). A Secret that exists but does not
// hold a valid key is an error the user must fix.
func (r *MeshClusterReconciler) reconcileCredentials(ctx context.Context, mc *meshv1.MeshCluster) (*identity.KeyPair, error) {
	operatorKey, err := r.ensureKeySecret(ctx, mc, resources.OperatorKeySecretName(mc))
	if err != nil {
		return nil, err
	}
	if _, err := r.ensureKeySecret(ctx, mc, resources.ClusterKeySecretName(mc)); err != nil {
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
