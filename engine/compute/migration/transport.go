package migration

import "context"

// Transport carries one encoded migration message to a node and returns
// the node's encoded reply (empty when the message needs none). The node
// package implements it over the network; memnet implements it in-process.
// An error means the caller cannot know whether the node handled the
// message, so every handler is idempotent for a resend.
type Transport interface {
	Exchange(ctx context.Context, to NodeID, req []byte) (reply []byte, err error)
}

// Handler is a node's migration endpoint: it handles one encoded message
// from node from and returns the encoded reply.
type Handler interface {
	Handle(ctx context.Context, from NodeID, req []byte) []byte
}
