package migration

import (
	"context"
	"errors"
	"fmt"
)

// Node is a node's migration endpoint: it serves the target side of
// inbound migrations and starts outbound ones on TakeSnapshot.
type Node struct {
	Target   *Target
	Migrator *Migrator
}

// Handle implements Handler: decode, dispatch, encode the reply.
func (n *Node) Handle(ctx context.Context, from NodeID, req []byte) []byte {
	msg, err := Decode(req)
	var reply Message
	if err != nil {
		reply = &Failed{Reason: ReasonStateFailed, Detail: err.Error()}
	} else {
		reply = n.dispatch(ctx, from, msg)
	}
	if reply == nil {
		return nil
	}
	b, err := Encode(reply)
	if err != nil {
		b, _ = Encode(&Failed{Daemon: msg.DaemonID(), Reason: ReasonStateFailed, Detail: err.Error()})
	}
	return b
}

func (n *Node) dispatch(ctx context.Context, from NodeID, msg Message) Message {
	switch m := msg.(type) {
	case *TakeSnapshot:
		if n.Migrator == nil {
			return failed(m.Daemon, ReasonComputeNotSupported, "node runs no compute runtime")
		}
		res, err := n.Migrator.Migrate(ctx, m.Daemon, m.Target)
		if err != nil {
			var fe *Error
			if errors.As(err, &fe) {
				return &Failed{Daemon: m.Daemon, Reason: fe.Reason, Attempts: uint8(min(fe.Attempts, 255)), Detail: err.Error()}
			}
			return failed(m.Daemon, ReasonStateFailed, "%v", err)
		}
		return &ActivateAck{Daemon: m.Daemon, Next: res.Cursor.Next(), Exhausted: res.Cursor.Exhausted()}
	}
	if n.Target == nil {
		return failed(msg.DaemonID(), ReasonComputeNotSupported, "node runs no compute runtime")
	}
	// Only the node that sent chunk 0 drives an inbound migration. A message
	// for the same daemon from any other node (a second source after a
	// split, or one whose migration was replaced) must not feed, activate or
	// abort it. Chunk 0 itself may replace the record (see HandleChunk).
	if c, isChunk := msg.(*SnapshotChunk); !isChunk || c.Index != 0 {
		if src, ok := n.Target.sourceOf(msg.DaemonID()); ok && src != from {
			if _, isAbort := msg.(*Failed); isAbort {
				return nil
			}
			return failed(msg.DaemonID(), ReasonAlreadyMigrating, "inbound migration is driven by %s, not %s", src, from)
		}
	}
	switch m := msg.(type) {
	case *SnapshotChunk:
		return n.Target.HandleChunk(from, m)
	case *BufferedEvents:
		return n.Target.HandleEvents(m)
	case *Cutover:
		return n.Target.HandleCutover(m)
	case *Activate:
		return n.Target.HandleActivate(m)
	case *Cleanup:
		return n.Target.HandleCleanup(m)
	case *Failed:
		return n.Target.HandleAbort(m)
	default:
		return failed(msg.DaemonID(), ReasonStateFailed, "unexpected request %s", fmt.Sprintf("%T", msg))
	}
}
