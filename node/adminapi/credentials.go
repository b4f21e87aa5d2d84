package adminapi

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/purplerain/mesh-operator/engine/identity"
)

// Credential rotation (GET and PUT /v1/credentials). The operator rotates
// a running cluster's keys without restarting a pod, in three pushes of
// the whole credential set, each accepted by every node before the next:
//
//  1. trust: the new operator and cluster public keys are trusted next to
//     the old ones (the push is signed with the old operator key);
//  2. switch: the node signs its replication tokens with the new cluster
//     key, whose private half comes sealed under a cluster key the node
//     already holds (identity.KeyPair.Seal); the operator signs with its
//     new key from now on;
//  3. drop: only the new keys are trusted.
//
// A PUT replaces the whole set (idempotent: the same body twice changes
// nothing) and is checked whole before anything changes, so a refused
// request leaves the node as it was.
//
// A dropped key stops working at once: the admin API checks every
// request, and what was verified before (the HTTP data API's cache of
// tokens, the binary data API's connection grants, replication streams)
// is verified again when the trusted keys change
// (identity.Verifier.Generation); a replication stream whose token's key
// was dropped ends at its next heartbeat.

// Credentials is the GET /v1/credentials answer and the PUT body. Keys
// are raw 32-byte ed25519 public keys (base64 in JSON).
type Credentials struct {
	// OperatorKeys are the keys whose admin tokens (and data-API grants)
	// the node accepts.
	OperatorKeys [][]byte `json:"operatorKeys"`
	// ClusterKeys are the keys whose replication tokens the node accepts.
	ClusterKeys [][]byte `json:"clusterKeys"`
	// ClusterSigningKey is the public half of the key the node signs its
	// own replication tokens with.
	ClusterSigningKey []byte `json:"clusterSigningKey,omitempty"`
	// SealedClusterKey (PUT only) carries the private half of
	// ClusterSigningKey, sealed under each cluster key the operator
	// holds; the node opens the one sealed under a key it holds. Needed
	// only when ClusterSigningKey is not the node's signing key already.
	SealedClusterKey []SealedKey `json:"sealedClusterKey,omitempty"`
}

// SealedKey is a private key sealed (identity.KeyPair.Seal) under the key
// pair whose public half is By.
type SealedKey struct {
	By  []byte `json:"by"`
	Box []byte `json:"box"`
}

// credentialState is the Server's part of rotation: the verifiers whose
// trusted keys a PUT replaces.
type credentialState struct {
	mu sync.Mutex
	// repl verifies peers' replication tokens (nil: this server cannot
	// change cluster trust).
	repl *identity.Verifier
	// alsoOperator are further verifiers rooted at the operator key (the
	// data API's), kept in step with the admin verifier.
	alsoOperator []*identity.Verifier
}

// TrustOperatorIn keeps v's trusted keys equal to the admin verifier's:
// now, and after every credential rotation. The data API's verifier is
// one (its grants are signed by the operator key).
func (s *Server) TrustOperatorIn(v *identity.Verifier) {
	if v == nil {
		return
	}
	s.creds.mu.Lock()
	defer s.creds.mu.Unlock()
	v.SetTrusted(s.verifier.Trusted())
	s.creds.alsoOperator = append(s.creds.alsoOperator, v)
}

func (s *Server) registerCredentials() {
	s.mux.Handle("GET /v1/credentials", s.admin(s.getCredentials))
	s.mux.Handle("PUT /v1/credentials", s.admin(s.putCredentials))
}

func (s *Server) currentCredentials() Credentials {
	c := Credentials{OperatorKeys: rawKeys(s.verifier.Trusted()), ClusterKeys: [][]byte{}}
	if s.creds.repl != nil {
		c.ClusterKeys = rawKeys(s.creds.repl.Trusted())
	}
	if k := s.node.ClusterKey(); k != nil {
		c.ClusterSigningKey = k.PublicKey()
	}
	return c
}

func (s *Server) getCredentials(w http.ResponseWriter, _ *http.Request) {
	s.creds.mu.Lock()
	defer s.creds.mu.Unlock()
	writeJSON(w, http.StatusOK, s.currentCredentials())
}

func (s *Server) putCredentials(w http.ResponseWriter, r *http.Request) {
	var req Credentials
	if err := decode(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	s.creds.mu.Lock()
	defer s.creds.mu.Unlock()
	operatorKeys, clusterKeys, signing, err := s.checkCredentials(req)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, err)
		return
	}
	// Trust before signing: the key the node signs with next is trusted
	// by every peer before it is used (the operator's step 1), and by
	// this node before its own push completes.
	s.verifier.SetTrusted(operatorKeys)
	for _, v := range s.creds.alsoOperator {
		v.SetTrusted(operatorKeys)
	}
	if s.creds.repl != nil {
		s.creds.repl.SetTrusted(clusterKeys)
	}
	if signing != nil {
		s.node.SetClusterKey(signing)
	}
	s.log.Info("credentials replaced", "operatorKeys", len(operatorKeys), "clusterKeys", len(clusterKeys), "newSigningKey", signing != nil)
	writeJSON(w, http.StatusOK, s.currentCredentials())
}

// checkCredentials validates req whole and returns what to apply: the
// trusted keys and the new signing key (nil: unchanged).
func (s *Server) checkCredentials(req Credentials) (operatorKeys, clusterKeys []ed25519.PublicKey, signing *identity.KeyPair, err error) {
	if operatorKeys, err = parseKeys(req.OperatorKeys); err != nil {
		return nil, nil, nil, fmt.Errorf("operatorKeys: %w", err)
	}
	if len(operatorKeys) == 0 {
		return nil, nil, nil, errors.New("operatorKeys: at least one key is required (none would lock the operator out)")
	}
	if clusterKeys, err = parseKeys(req.ClusterKeys); err != nil {
		return nil, nil, nil, fmt.Errorf("clusterKeys: %w", err)
	}
	if s.creds.repl == nil {
		if len(clusterKeys) > 0 || req.ClusterSigningKey != nil {
			return nil, nil, nil, errors.New("clusterKeys: this node has no replication verifier to change")
		}
		return operatorKeys, nil, nil, nil
	}
	if len(clusterKeys) == 0 {
		return nil, nil, nil, errors.New("clusterKeys: at least one key is required (none would stop replication)")
	}
	current := s.node.ClusterKey()
	want := ed25519.PublicKey(req.ClusterSigningKey)
	if want == nil && current != nil {
		want = current.PublicKey()
	}
	if want != nil && !containsKey(clusterKeys, want) {
		return nil, nil, nil, errors.New("clusterSigningKey: must be one of clusterKeys (peers would refuse this node's tokens)")
	}
	if want == nil || (current != nil && current.PublicKey().Equal(want)) {
		return operatorKeys, clusterKeys, nil, nil
	}
	if len(want) != ed25519.PublicKeySize {
		return nil, nil, nil, fmt.Errorf("clusterSigningKey: %d bytes, want %d", len(want), ed25519.PublicKeySize)
	}
	for _, held := range s.node.ClusterKeys() {
		for _, sk := range req.SealedClusterKey {
			if !held.PublicKey().Equal(ed25519.PublicKey(sk.By)) {
				continue
			}
			k, err := held.Open(sk.Box, want)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("sealedClusterKey: %w", err)
			}
			return operatorKeys, clusterKeys, k, nil
		}
	}
	return nil, nil, nil, errors.New("sealedClusterKey: the new signing key is not sealed under any cluster key this node holds")
}

func parseKeys(raw [][]byte) ([]ed25519.PublicKey, error) {
	keys := make([]ed25519.PublicKey, 0, len(raw))
	for i, k := range raw {
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("key %d is %d bytes, want %d", i, len(k), ed25519.PublicKeySize)
		}
		if !containsKey(keys, k) {
			keys = append(keys, ed25519.PublicKey(k))
		}
	}
	return keys, nil
}

func containsKey(keys []ed25519.PublicKey, k ed25519.PublicKey) bool {
	for _, have := range keys {
		if have.Equal(k) {
			return true
		}
	}
	return false
}

func rawKeys(keys []ed25519.PublicKey) [][]byte {
	out := make([][]byte, 0, len(keys))
	for _, k := range keys {
		out = append(out, k)
	}
	return out
}
