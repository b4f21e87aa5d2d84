package adminclient

import (
	"context"
	"net/http"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node/adminapi"
)

// CredentialsClient reads and replaces the keys a node trusts and signs
// with (credential rotation, see node/adminapi). *HTTP implements it; it
// is apart from Client so the orchestration surface stays the same.
type CredentialsClient interface {
	// Credentials reads the node's public credentials.
	Credentials(ctx context.Context) (adminapi.Credentials, error)
	// PutCredentials replaces them whole and returns what the node now
	// holds. A set the node cannot apply is a *StatusError with status
	// 422 and nothing changed.
	PutCredentials(ctx context.Context, c adminapi.Credentials) (adminapi.Credentials, error)
}

// NewCredentialsClient returns the credentials client of the node whose
// admin address is addr, signing its calls with key (nil hc: a default
// client with a 5s timeout).
func NewCredentialsClient(key *identity.KeyPair, hc *http.Client, addr string) CredentialsClient {
	return NewHTTPDialer(key, hc)(addr).(*HTTP)
}

// Credentials implements CredentialsClient.
func (c *HTTP) Credentials(ctx context.Context) (adminapi.Credentials, error) {
	var out adminapi.Credentials
	err := c.call(ctx, http.MethodGet, "/v1/credentials", nil, &out)
	return out, err
}

// PutCredentials implements CredentialsClient.
func (c *HTTP) PutCredentials(ctx context.Context, in adminapi.Credentials) (adminapi.Credentials, error) {
	var out adminapi.Credentials
	err := c.call(ctx, http.MethodPut, "/v1/credentials", in, &out)
	return out, err
}
