package kubelet

import (
	"context"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
)

// TestTokenCacheGetsBoundTokensAndRenewsThemAt80Percent asks the real API
// server's TokenRequest API: the token authenticates as the pod's service
// account and is bound to the pod; it is reused until 80% of its life,
// renewed after; a failed renewal keeps the old token until it expires.
func TestTokenCacheGetsBoundTokensAndRenewsThemAt80Percent(t *testing.T) {
	cs := startAPIServer(t)
	ctx := context.Background()
	if _, err := cs.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "mesh"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "tok", Namespace: "default"},
		Spec: corev1.PodSpec{ServiceAccountName: "mesh", NodeSelector: map[string]string{"none": "none"},
			Containers: []corev1.Container{{Name: "c", Image: "example.com/x"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakePassiveClock(time.Now())
	c := newTokenCache(ctx, cs, clk)
	exp := int64(3600)
	proj := &corev1.ServiceAccountTokenProjection{Path: "token", Audience: "mesh-test", ExpirationSeconds: &exp}

	first, err := c.Token(pod, proj)
	if err != nil {
		t.Fatal(err)
	}
	review, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: string(first), Audiences: []string{"mesh-test"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := review.Status
	if !st.Authenticated || st.User.Username != "system:serviceaccount:default:mesh" {
		t.Fatalf("token review: %+v", st)
	}
	if got := st.User.Extra["authentication.kubernetes.io/pod-name"]; len(got) != 1 || got[0] != "tok" {
		t.Errorf("token not bound to the pod: extra %v", st.User.Extra)
	}

	issued := c.tokens[tokenKey{"mesh", "mesh-test", exp}]
	life := issued.notAfter.Sub(issued.issued)
	if life < 10*time.Minute {
		t.Fatalf("token life %s, want about the requested hour", life)
	}
	clk.SetTime(issued.issued.Add(life * 79 / 100))
	if again, err := c.Token(pod, proj); err != nil || string(again) != string(first) {
		t.Errorf("at 79%% of its life the token was replaced (%v)", err)
	}
	clk.SetTime(issued.issued.Add(life * 81 / 100))
	renewed, err := c.Token(pod, proj)
	if err != nil || string(renewed) == string(first) {
		t.Fatalf("at 81%% of its life the token was not renewed (%v)", err)
	}

	// The pod is gone: the API server refuses to bind a new token to it.
	// The current one is served while valid, then the error surfaces.
	if err := cs.CoreV1().Pods("default").Delete(ctx, "tok", metav1.DeleteOptions{GracePeriodSeconds: ptrTo[int64](0)}); err != nil {
		t.Fatal(err)
	}
	// (The fake clock ran ahead of the API server's: the renewed token's
	// life as seen here is shorter.)
	issued = c.tokens[tokenKey{"mesh", "mesh-test", exp}]
	life = issued.notAfter.Sub(issued.issued)
	clk.SetTime(issued.issued.Add(life * 90 / 100))
	if kept, err := c.Token(pod, proj); err != nil || string(kept) != string(renewed) {
		t.Errorf("failed renewal: got a new token or an error (%v) instead of the still valid one", err)
	}
	clk.SetTime(issued.notAfter.Add(time.Second))
	if _, err := c.Token(pod, proj); err == nil {
		t.Error("an expired token whose renewal fails was served")
	}
}
