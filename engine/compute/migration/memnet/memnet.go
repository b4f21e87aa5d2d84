// Package memnet is an in-process migration transport: every message is
// encoded, its bytes copied to the receiving node's handler and the reply
// copied back, exactly as a network transport would move them. Faults can
// drop a request before delivery or drop the reply after the handler ran.
package memnet

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/purplerain/mesh-operator/engine/compute/migration"
)

// Fault is what happens to one exchange.
type Fault uint8

const (
	// Deliver passes the message and its reply.
	Deliver Fault = iota
	// DropRequest loses the message: the handler never sees it.
	DropRequest
	// DropReply delivers the message but loses the reply.
	DropReply
)

// ErrDropped is returned by Exchange for an injected fault.
var ErrDropped = errors.New("memnet: message dropped")

// ErrUnreachable is returned for a node with no registered handler.
var ErrUnreachable = errors.New("memnet: node unreachable")

// FaultFunc decides the fate of one message from one node to another.
type FaultFunc func(from, to migration.NodeID, msg migration.Message) Fault

// Network connects in-process nodes.
type Network struct {
	mu       sync.Mutex
	handlers map[migration.NodeID]migration.Handler
	fault    FaultFunc
	sent     map[string]int
	bytes    int64
}

// New returns an empty network.
func New() *Network {
	return &Network{handlers: make(map[migration.NodeID]migration.Handler), sent: make(map[string]int)}
}

// Register attaches node's handler (nil detaches it: the node is down).
func (n *Network) Register(node migration.NodeID, h migration.Handler) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if h == nil {
		delete(n.handlers, node)
		return
	}
	n.handlers[node] = h
}

// SetFault installs f (nil: deliver everything).
func (n *Network) SetFault(f FaultFunc) {
	n.mu.Lock()
	n.fault = f
	n.mu.Unlock()
}

// Sent returns how many messages of each Go type were delivered.
func (n *Network) Sent() map[string]int {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string]int, len(n.sent))
	for k, v := range n.sent {
		out[k] = v
	}
	return out
}

// Bytes is the total request and reply bytes moved.
func (n *Network) Bytes() int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.bytes
}

// Transport returns node from's view of the network.
func (n *Network) Transport(from migration.NodeID) migration.Transport {
	return &transport{n: n, from: from}
}

type transport struct {
	n    *Network
	from migration.NodeID
}

func (t *transport) Exchange(ctx context.Context, to migration.NodeID, req []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	msg, err := migration.Decode(req)
	if err != nil {
		return nil, fmt.Errorf("memnet: undecodable request: %w", err)
	}
	t.n.mu.Lock()
	h := t.n.handlers[to]
	fault := t.n.fault
	t.n.mu.Unlock()
	if h == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnreachable, to)
	}
	f := Deliver
	if fault != nil {
		f = fault(t.from, to, msg)
	}
	if f == DropRequest {
		return nil, fmt.Errorf("%w: %T to %s", ErrDropped, msg, to)
	}
	in := append([]byte(nil), req...) // the receiver must not share the sender's memory
	reply := h.Handle(ctx, t.from, in)
	t.n.mu.Lock()
	t.n.sent[fmt.Sprintf("%T", msg)]++
	t.n.bytes += int64(len(req) + len(reply))
	t.n.mu.Unlock()
	if f == DropReply {
		return nil, fmt.Errorf("%w: reply to %T from %s", ErrDropped, msg, to)
	}
	return append([]byte(nil), reply...), nil
}
