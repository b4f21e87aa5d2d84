package adapter

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

// Release note: "JetStream from_id cursor seq + 1 overflows".
func TestSeqPlusOneSaturates(t *testing.T) {
	if SatAdd1(math.MaxUint64) != math.MaxUint64 || SatAdd1(41) != 42 {
		t.Fatal("SatAdd1 wrapped or miscounted")
	}
	p := Position{Hi: math.MaxUint64, Lo: math.MaxUint64}
	if p.Next() != p {
		t.Fatalf("max position Next = %v, want itself", p.Next())
	}
	if (Position{Lo: math.MaxUint64}).Next() != (Position{Hi: 1}) {
		t.Fatal("Lo overflow does not carry into Hi")
	}
}

// Release note: "Redis & JetStream limit + 1 overflow on adversarial limits".
func TestLimitPlusOneSaturates(t *testing.T) {
	if SatLimitPlus1(math.MaxInt) != math.MaxInt || SatLimitPlus1(9) != 10 {
		t.Fatal("SatLimitPlus1 wrapped")
	}
}

// Release note: "JetStream as u16 truncates shard_id".
func TestShardIDAbove65535IsFatal(t *testing.T) {
	if _, err := CheckShardID(65536); !IsFatal(err) {
		t.Fatalf("CheckShardID(65536) = %v, want fatal", err)
	}
	if id, err := CheckShardID(65535); err != nil || id != 65535 {
		t.Fatalf("CheckShardID(65535) = %d, %v", id, err)
	}
}

// Release note: "JetStream unwrap_or_default() on remote JSON".
func TestMalformedEnvelopeIsFatalNeverEmpty(t *testing.T) {
	good := AppendEnvelope(nil, 7, 123, []byte("payload"))
	ts, p, err := DecodeEnvelope(good, 7)
	if err != nil || ts != 123 || string(p) != "payload" {
		t.Fatalf("round trip: %d %q %v", ts, p, err)
	}
	bad := map[string][]byte{
		"empty":   nil,
		"short":   good[:5],
		"version": append([]byte{9}, good[1:]...),
	}
	for name, b := range bad {
		if _, p, err := DecodeEnvelope(b, 7); !IsFatal(err) || p != nil {
			t.Errorf("%s: payload %q err %v, want fatal and no payload", name, p, err)
		}
	}
	if _, _, err := DecodeEnvelope(good, 8); !IsFatal(err) {
		t.Errorf("envelope of shard 7 read as shard 8: %v", err)
	}
}

func TestPositionOrderAndParse(t *testing.T) {
	a, b := Position{Lo: 5}, Position{Hi: 1}
	if !a.Less(b) || b.Less(a) || a.Compare(a) != 0 || a.Max(b) != b {
		t.Fatal("ordering")
	}
	for _, p := range []Position{{}, {Lo: 9}, {Hi: 1700000000000, Lo: 3}} {
		q, err := ParsePosition(p.String())
		if err != nil || q != p {
			t.Fatalf("parse(%q) = %v, %v", p.String(), q, err)
		}
	}
	if _, err := ParsePosition("x-1"); err == nil {
		t.Fatal("bad position parsed")
	}
}

func TestDedupIDStableAcrossRetries(t *testing.T) {
	b := Batch{Shard: 3, Seq: 9, Nonce: "n"}
	if b.DedupID(2) != "n:3:9:2" || b.DedupID(2) != (&Batch{Shard: 3, Seq: 9, Nonce: "n"}).DedupID(2) {
		t.Fatalf("DedupID = %q", b.DedupID(2))
	}
}

func TestFatalWrapsCause(t *testing.T) {
	cause := errors.New("root")
	err := Fatal("ctx: %w", cause)
	if !errors.Is(err, ErrFatal) || !errors.Is(err, cause) {
		t.Fatal("Fatal lost ErrFatal or the cause")
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	f.Add(AppendEnvelope(nil, 1, 2, []byte("x")), uint16(1))
	f.Add([]byte{1, 0}, uint16(0))
	f.Fuzz(func(t *testing.T, b []byte, shard uint16) {
		ts, p, err := DecodeEnvelope(b, shard)
		if err != nil {
			if !IsFatal(err) || p != nil {
				t.Fatalf("non-fatal or partial decode error: %v", err)
			}
			return
		}
		if !bytes.Equal(AppendEnvelope(nil, shard, ts, p), b) {
			t.Fatal("re-encoding differs")
		}
	})
}
