package resources

import (
	"crypto/ed25519"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/engine/identity"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
)

func TestOperatorRendersTokenDataAuth(t *testing.T) {
	mc := &meshv1.MeshCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "ns"}}
	c := NodeConfig(mc)
	if c.DataAuth == nil || c.DataAuth.Mode != nodeconfig.DataAuthToken {
		t.Fatalf("operator rendered dataAuth %+v, want mode Token written out", c.DataAuth)
	}
}

func TestDataKeySecretHoldsVerifiableCredentials(t *testing.T) {
	mc := &meshv1.MeshCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "ns"}}
	op, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	dc, err := identity.NewDataCredentials(op, DataGrantTTL, now)
	if err != nil {
		t.Fatal(err)
	}
	s, err := DataKeySecret(mc, dc)
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "demo-data-key" || s.Namespace != "ns" {
		t.Fatalf("secret %s/%s", s.Namespace, s.Name)
	}
	back, err := identity.DataCredentialsFromSecretData(s.Data)
	if err != nil {
		t.Fatal(err)
	}
	// What a node does: trust only the operator key, one delegation.
	v := identity.NewVerifier([]ed25519.PublicKey{op.PublicKey()}, identity.WithMaxDelegationDepth(1))
	tok, err := back.Token(identity.DataScope, time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(tok, now, identity.ScopeIngest); err != nil {
		t.Fatalf("token from the Secret refused by a node's verifier: %v", err)
	}
	if err := v.Verify(tok, now, identity.ScopeAdmin); err == nil {
		t.Fatal("a data token passed as admin")
	}
}
