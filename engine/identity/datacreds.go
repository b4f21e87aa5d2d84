package identity

import (
	"bytes"
	"crypto/ed25519"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// Data-API credentials.
//
// Applications authenticate to a cluster's data API with tokens whose root
// link the operator signed. The operator does not sign every application
// token: it makes one data key pair per cluster and signs a long-lived
// grant to it (ScopeIngest|ScopeConsume, delegation 1). Whoever holds the
// data key and its grant (the cluster's data Secret) delegates itself
// short-lived tokens (DataCredentials.Token), which nodes verify against
// the operator's public key alone: nodes need no new key material and the
// data key can never act on the admin API (the grant carries no
// ScopeAdmin, and a delegated link cannot widen it).
//
// The Secret also names the keys nodes sign their wire session handshakes
// with (SecretServerKeys: the public half of the cluster key, both the old
// and the new one while a credential rotation is in flight), so a client
// that loads it can authenticate the nodes it talks to (the SDK pins them
// by default) and a man in the middle cannot pose as a node.

// SecretGrant is the Secret data key holding the operator's grant to the
// data key (EncodeHeader form), next to SecretPrivateKey/SecretPublicKey.
const SecretGrant = "grant"

// SecretServerKeys is the Secret data key holding the public keys nodes
// sign wire session handshakes with: PKIX "PUBLIC KEY" PEM blocks, one
// after another. Optional (Secrets made before it existed lack it).
const SecretServerKeys = "server-keys"

// DataScope is what a data-API client may do.
const DataScope = ScopeIngest | ScopeConsume

// ErrMissingGrant: the Secret data holds no grant.
var ErrMissingGrant = errors.New("identity: secret data has no data grant")

// DataCredentials are a data key pair and the operator's grant to it.
type DataCredentials struct {
	Key   *KeyPair
	Grant *Token
	// ServerKeys are the keys a node may sign its wire session handshake
	// with (SecretServerKeys); nil if the Secret does not name them.
	ServerKeys []ed25519.PublicKey
}

// NewDataCredentials makes a fresh data key pair and signs, with the
// operator key, a grant to it valid for ttl from now.
func NewDataCredentials(operator *KeyPair, ttl time.Duration, now time.Time) (*DataCredentials, error) {
	k, err := Generate(nil)
	if err != nil {
		return nil, fmt.Errorf("identity: data key: %w", err)
	}
	g, err := operator.TryIssue(Grant{Subject: k.PublicKey(), Scope: DataScope, TTL: ttl, Delegation: 1}, now)
	if err != nil {
		return nil, fmt.Errorf("identity: data grant: %w", err)
	}
	return &DataCredentials{Key: k, Grant: g}, nil
}

// SecretData returns the credentials as Secret data: the key pair's entries
// and SecretGrant.
func (d *DataCredentials) SecretData() (map[string][]byte, error) {
	data, err := d.Key.ToSecretData()
	if err != nil {
		return nil, err
	}
	data[SecretGrant] = []byte(d.Grant.EncodeHeader())
	if len(d.ServerKeys) > 0 {
		if data[SecretServerKeys], err = EncodeServerKeys(d.ServerKeys); err != nil {
			return nil, err
		}
	}
	return data, nil
}

// EncodeServerKeys encodes keys as SecretServerKeys holds them.
func EncodeServerKeys(keys []ed25519.PublicKey) ([]byte, error) {
	var out []byte
	for _, k := range keys {
		b, err := MarshalPublicKeyPEM(k)
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	return out, nil
}

// ParseServerKeys decodes SecretServerKeys: one or more PKIX PEM blocks
// (anything else in it is an error, so a damaged entry is not read as
// fewer keys).
func ParseServerKeys(data []byte) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	rest := bytes.TrimSpace(data)
	for len(rest) > 0 {
		block, next := pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("identity: server keys: not a PEM block at byte %d: %w", len(data)-len(rest), ErrBadKeyEncoding)
		}
		k, err := ParsePublicKey(pem.EncodeToMemory(block))
		if err != nil {
			return nil, fmt.Errorf("identity: server key %d: %w", len(keys), err)
		}
		keys = append(keys, k)
		rest = bytes.TrimSpace(next)
	}
	return keys, nil
}

// DataCredentialsFromSecretData loads credentials written by SecretData,
// with ServerKeys when the Secret names them. It checks that the grant was
// issued to the key; whether the grant is still
// valid is the verifier's business (Check).
func DataCredentialsFromSecretData(data map[string][]byte) (*DataCredentials, error) {
	k, err := KeyPairFromSecretData(data)
	if err != nil {
		return nil, err
	}
	raw, ok := data[SecretGrant]
	if !ok || len(raw) == 0 {
		return nil, ErrMissingGrant
	}
	g, err := ParseHeader(string(raw))
	if err != nil {
		return nil, fmt.Errorf("identity: secret key %q: %w", SecretGrant, err)
	}
	if !g.Subject().Equal(k.PublicKey()) {
		return nil, fmt.Errorf("identity: secret key %q: grant is for another key: %w", SecretGrant, ErrNotSubject)
	}
	dc := &DataCredentials{Key: k, Grant: g}
	if raw := data[SecretServerKeys]; len(raw) > 0 {
		if dc.ServerKeys, err = ParseServerKeys(raw); err != nil {
			return nil, fmt.Errorf("identity: secret key %q: %w", SecretServerKeys, err)
		}
	}
	return dc, nil
}

// Check verifies the grant against the operator's public key at now, so a
// grant signed by a replaced operator key or one that expired is noticed
// where the credentials are made, not by every client.
func (d *DataCredentials) Check(v *Verifier, now time.Time) error {
	return v.Verify(d.Grant, now, DataScope)
}

// Token delegates a token valid for ttl from now (clipped to the grant's
// window) with the given scope, which must lie within DataScope.
func (d *DataCredentials) Token(scope Scope, ttl time.Duration, now time.Time) (*Token, error) {
	return d.Key.Delegate(d.Grant, Grant{Subject: d.Key.PublicKey(), Scope: scope, TTL: ttl}, now)
}
