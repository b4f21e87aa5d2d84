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
// TODO(issue 7): the data API is not authenticated yet (the admin API is);
// ingest and consume tokens (identity.ScopeIngest/ScopeConsume) come with
// the binary wire data API.
package dataapi

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
