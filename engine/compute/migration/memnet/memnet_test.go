package memnet

import (
	"context"
	"errors"
	"testing"

	"github.com/purplerain/mesh-operator/engine/compute/migration"
)

type recorder struct {
	got   [][]byte
	reply []byte
}

func (r *recorder) Handle(_ context.Context, _ migration.NodeID, req []byte) []byte {
	r.got = append(r.got, req)
	req[0] = 0xff // the sender's buffer must not change
	return r.reply
}

func TestFaultsAndByteCopies(t *testing.T) {
	n := New()
	rec := &recorder{}
	rec.reply, _ = migration.Encode(&migration.Cleanup{Daemon: "d"})
	n.Register("b", rec)
	req, _ := migration.Encode(&migration.Activate{Daemon: "d"})
	orig := append([]byte(nil), req...)
	tr := n.Transport("a")

	reply, err := tr.Exchange(context.Background(), "b", req)
	if err != nil || string(reply) != string(rec.reply) || string(req) != string(orig) {
		t.Fatalf("deliver: reply %v err %v; request changed: %v", reply, err, string(req) != string(orig))
	}
	reply[0] = 0 // the receiver's reply buffer must not change either
	if rec.reply[0] == 0 {
		t.Fatal("reply bytes shared between nodes")
	}

	n.SetFault(func(_, _ migration.NodeID, _ migration.Message) Fault { return DropRequest })
	if _, err := tr.Exchange(context.Background(), "b", req); !errors.Is(err, ErrDropped) || len(rec.got) != 1 {
		t.Fatalf("DropRequest: err %v, handler saw %d requests (want 1)", err, len(rec.got))
	}
	n.SetFault(func(_, _ migration.NodeID, _ migration.Message) Fault { return DropReply })
	if _, err := tr.Exchange(context.Background(), "b", req); !errors.Is(err, ErrDropped) || len(rec.got) != 2 {
		t.Fatalf("DropReply: err %v, handler saw %d requests (want 2)", err, len(rec.got))
	}
	if _, err := tr.Exchange(context.Background(), "c", req); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("unknown node: %v", err)
	}
	if got := n.Sent()["*migration.Activate"]; got != 2 {
		t.Fatalf("Sent counted %d Activate deliveries, want 2", got)
	}
}
