package migration_test

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/compute/migration"
)

var sampleMessages = []migration.Message{
	&migration.TakeSnapshot{Daemon: "d", Target: "node-2"},
	&migration.SnapshotChunk{Daemon: "d", Index: 1, Total: 3, Data: bytes.Repeat([]byte{7}, migration.MaxChunk)},
	&migration.RestoreComplete{Daemon: "d", Next: 42},
	&migration.BufferedEvents{Daemon: "d", Events: []compute.Event{{Seq: 1, Time: -5, Key: []byte("k"), Payload: []byte("p")}, {Seq: 2}}},
	&migration.BufferedEvents{Daemon: "d"},
	&migration.ReplayComplete{Daemon: "d", Next: math.MaxUint64, Exhausted: true},
	&migration.Cutover{Daemon: "d", Next: 9},
	&migration.Activate{Daemon: "d"},
	&migration.ActivateAck{Daemon: "d", Next: 9},
	&migration.Cleanup{Daemon: "d"},
	&migration.Failed{Daemon: "d", Reason: migration.ReasonNotReadyTimeout, Attempts: 3, Detail: "gave up"},
}

func TestMessagesRoundTrip(t *testing.T) {
	for _, m := range sampleMessages {
		b, err := migration.Encode(m)
		if err != nil {
			t.Fatalf("encode %T: %v", m, err)
		}
		got, err := migration.Decode(b)
		if err != nil {
			t.Fatalf("decode %T: %v", m, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip %#v -> %#v", m, got)
		}
		// Every strict prefix is refused, never misread.
		for i := 0; i < len(b); i++ {
			if _, err := migration.Decode(b[:i]); !errors.Is(err, migration.ErrMalformed) {
				t.Fatalf("%T truncated to %d bytes: %v", m, i, err)
			}
		}
	}
}

func TestEncodeRefusesOversizedChunk(t *testing.T) {
	_, err := migration.Encode(&migration.SnapshotChunk{Daemon: "d", Total: 1, Data: make([]byte, migration.MaxChunk+1)})
	if !errors.Is(err, migration.ErrMalformed) {
		t.Fatalf("got %v, want ErrMalformed for a %d-byte chunk", err, migration.MaxChunk+1)
	}
}

func FuzzDecode(f *testing.F) {
	for _, m := range sampleMessages {
		b, _ := migration.Encode(m)
		f.Add(b)
	}
	f.Add([]byte{4, 1, 'd', 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := migration.Decode(b)
		if err != nil {
			return
		}
		again, err := migration.Encode(m)
		if err != nil {
			t.Fatalf("decoded %#v does not re-encode: %v", m, err)
		}
		m2, err := migration.Decode(again)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-decode mismatch: %#v vs %#v (%v)", m, m2, err)
		}
	})
}
