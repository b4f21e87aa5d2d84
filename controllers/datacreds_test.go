package controllers_test

import (
	"context"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/purplerain/mesh-operator/engine/identity"
)

// dataCredentials reads the data-API credentials the operator made for the
// named cluster (its <name>-data-key Secret), as an application would: the
// nodes require data tokens, so SDK clients and direct HTTP writes in these
// specs authenticate with what the operator published, never bypassing it.
func dataCredentials(name string) *identity.DataCredentials {
	var dc *identity.DataCredentials
	Eventually(func(g Gomega) {
		secret := &corev1.Secret{}
		g.Expect(k8sClient.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: name + "-data-key"}, secret)).To(Succeed())
		var err error
		dc, err = identity.DataCredentialsFromSecretData(secret.Data)
		g.Expect(err).NotTo(HaveOccurred())
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	return dc
}

// dataTokenHeader is a Mesh-Token header value delegated from the
// cluster's data credentials, valid for an hour.
func dataTokenHeader(name string) string {
	tok, err := dataCredentials(name).Token(identity.DataScope, time.Hour, time.Now())
	Expect(err).NotTo(HaveOccurred())
	return tok.EncodeHeader()
}
