// Package dataapi serves a node's data API over HTTP/JSON: ingest, poll and
// the public topology, for applications and the client SDK (package
// client). Byte fields travel as base64 (encoding/json's []byte form).
//
// A node does not forward: a write for a shard it does not own is refused
// with 421 Misdirected Request and an error body naming the owner's data
// address, so the client retries there. Transient refusals (shard moving,
// lease expired, no topology yet, backpressure) are 503 with Retry-After.
// A cursor behind retention is 410 Gone, never a silent skip. An ingest a
// behaviour rule refuses is 422 (429 when rate limited) with code
// rule_rejected and the rule's name; nothing of it was appended.
//
// # Authentication
//
// With Options.Verifier set (the node runtime sets it unless its
// configuration says dataAuth mode None), every request carries a
// permission token in the Mesh-Token header (identity.EncodeHeader form):
// ingest needs identity.ScopeIngest, poll identity.ScopeConsume, the
// topology either. A missing, malformed, untrusted or expired token is
// 401 with code unauthenticated (and WWW-Authenticate: Mesh-Token); a
// valid token without the scope is 403 with code rejected. Either way the
// request changed nothing. Tokens are the operator's: their root link is
// signed by the operator key, directly or through the cluster's data key
// (identity.DataCredentials, the <cluster>-data-key Secret), which lets a
// client delegate itself short-lived tokens. The binary data API (package
// wireapi) checks the same tokens.
//
// Tokens are bearer credentials and HTTP here is plain text: run the data
// port on a trusted network or behind TLS termination.
package dataapi

import "errors"

// ErrUnauthenticated and ErrForbidden are what the SDK's refusals unwrap
// to for codes unauthenticated (401) and rejected (403).
var (
	ErrUnauthenticated = errors.New("dataapi: no valid token")
	ErrForbidden       = errors.New("dataapi: token does not allow this")
)

// Event is one event to ingest. An event with a key goes to the key's base
// shard; a keyless one to a shard the receiving node owns.
type Event struct {
	Key     []byte `json:"key,omitempty"`
	Payload []byte `json:"payload"`
}

// IngestRequest is the body of POST /v1/ingest.
type IngestRequest struct {
	Events []Event `json:"events"`
}

// Ack acknowledges one ingested event.
type Ack struct {
	Shard uint16 `json:"shard"`
}

// IngestResponse answers POST /v1/ingest: one ack per event, in order.
type IngestResponse struct {
	Acks []Ack `json:"acks"`
}

// StoredEvent is one event read back.
type StoredEvent struct {
	Shard uint16 `json:"shard"`
	Seq   uint64 `json:"seq"`
	// Time is the append time in Unix nanoseconds.
	Time    int64  `json:"time"`
	Payload []byte `json:"payload"`
}

// PollResponse answers GET /v1/poll.
type PollResponse struct {
	Events []StoredEvent `json:"events"`
	// Cursor resumes after this page; pass it back unchanged.
	Cursor                 string   `json:"cursor"`
	HasMore                bool     `json:"hasMore"`
	TruncatedAtPerShardCap bool     `json:"truncatedAtPerShardCap"`
	StalledShards          []uint16 `json:"stalledShards,omitempty"`
}

// Error codes in ErrorResponse.Code.
const (
	CodeBadRequest      = "bad_request"
	CodeNotOwner        = "not_owner"
	CodeShardMoving     = "shard_moving"
	CodeLeaseExpired    = "lease_expired"
	CodeNoTopology      = "no_topology"
	CodeBackpressure    = "backpressure"
	CodeBehindRetention = "behind_retention"
	CodeRejected        = "rejected"
	// CodeUnauthenticated: no valid token (401); get a fresh one.
	CodeUnauthenticated = "unauthenticated"
	CodeInternal        = "internal"

	// CodeRuleRejected: a behaviour rule refused the whole request (422,
	// or 429 when rate limited); Rule names it. Not retriable as is.
	CodeRuleRejected = "rule_rejected"
)

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	Error string `json:"error"`
	Code  string `json:"code"`
	// Shard, Owner and OwnerData accompany not_owner (and shard_moving when
	// the new owner is known).
	Shard     *uint16 `json:"shard,omitempty"`
	Owner     string  `json:"owner,omitempty"`
	OwnerData string  `json:"ownerData,omitempty"`
	// Rule, Rules and RateLimited accompany rule_rejected: the first
	// failing rule, every failing rule (sorted), and whether the refusal is
	// a rate limit.
	Rule        string   `json:"rule,omitempty"`
	Rules       []string `json:"rules,omitempty"`
	RateLimited bool     `json:"rateLimited,omitempty"`
}
