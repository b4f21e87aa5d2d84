package kubelet

import (
	"context"
	"fmt"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// defaultTokenExpiration is a projection's expirationSeconds when unset
// (the API server defaults it to the same on pod creation).
const defaultTokenExpiration = int64(3600)

// tokenCache gets service-account tokens for one pod's projected volumes
// from the API server's TokenRequest API, bound to the pod, and renews
// each as the kubelet does: once 80% of its life has passed or it is a day
// old. A failed renewal keeps the old token while it is still valid.
type tokenCache struct {
	client kubernetes.Interface
	clock  clock.PassiveClock
	ctx    context.Context

	mu     sync.Mutex
	tokens map[tokenKey]issuedToken
}

type tokenKey struct {
	serviceAccount, audience string
	expiration               int64
}

type issuedToken struct {
	token            string
	issued, notAfter time.Time
}

func newTokenCache(ctx context.Context, cs kubernetes.Interface, clk clock.PassiveClock) *tokenCache {
	return &tokenCache{client: cs, clock: clk, ctx: ctx, tokens: map[tokenKey]issuedToken{}}
}

func (t issuedToken) stale(now time.Time) bool {
	life := t.notAfter.Sub(t.issued)
	return !now.Before(t.issued.Add(life*8/10)) || now.Sub(t.issued) > 24*time.Hour
}

// Token returns the token of pod's service account for projection p.
func (c *tokenCache) Token(pod *corev1.Pod, p *corev1.ServiceAccountTokenProjection) ([]byte, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	exp := defaultTokenExpiration
	if p.ExpirationSeconds != nil {
		exp = *p.ExpirationSeconds
	}
	key := tokenKey{serviceAccount: sa, audience: p.Audience, expiration: exp}
	now := c.clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	cur, ok := c.tokens[key]
	if ok && !cur.stale(now) {
		return []byte(cur.token), nil
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &exp,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if p.Audience != "" {
		req.Spec.Audiences = []string{p.Audience}
	}
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	got, err := c.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		if ok && now.Before(cur.notAfter) {
			return []byte(cur.token), nil // renew at the next refresh
		}
		return nil, fmt.Errorf("token for service account %s/%s: %w", pod.Namespace, sa, err)
	}
	cur = issuedToken{token: got.Status.Token, issued: now, notAfter: got.Status.ExpirationTimestamp.Time}
	c.tokens[key] = cur
	return []byte(cur.token), nil
}
