package wire

import (
	"errors"
	"testing"
)

func TestStreamWindowCredit(t *testing.T) {
	w := NewStreamWindow(1, 100)
	if err := w.Reserve(60); err != nil {
		t.Fatal(err)
	}
	if w.Available() != 40 {
		t.Fatalf("available = %d, want 40", w.Available())
	}
	if err := w.Reserve(41); !errors.Is(err, ErrWindowExhausted) {
		t.Fatalf("err = %v, want ErrWindowExhausted", err)
	}
	if w.Sent() != 60 {
		t.Fatal("a refused reserve changed the window")
	}
	if ok, err := w.Apply(WindowUpdate{StreamID: 1, Consumed: 50, Window: 100}); err != nil || !ok {
		t.Fatalf("apply: %v %v", ok, err)
	}
	if w.Available() != 90 {
		t.Fatalf("available = %d, want 90", w.Available())
	}
	if err := w.Reserve(-1); !errors.Is(err, ErrWindowExhausted) {
		t.Fatalf("negative reserve: err = %v", err)
	}
}

// Net v0.9 "StreamWindow.decode unbounded total_consumed": the consumed
// total a receiver reports is bounded by what was sent.
func TestStreamWindowDecodeUnboundedTotalConsumed(t *testing.T) {
	w := NewStreamWindow(7, 1000)
	_ = w.Reserve(500)
	b, _ := WindowUpdate{StreamID: 7, Consumed: ^uint64(0), Window: 1000}.AppendTo(nil)
	m, err := DecodeControl(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Apply(m.(WindowUpdate)); !errors.Is(err, ErrConsumedBeyondSent) {
		t.Fatalf("err = %v, want ErrConsumedBeyondSent", err)
	}
	if w.Consumed() != 0 || w.Available() != 500 {
		t.Fatalf("a refused update changed the window: consumed %d available %d", w.Consumed(), w.Available())
	}
	if _, err := w.Apply(WindowUpdate{StreamID: 7, Consumed: 501, Window: 1000}); !errors.Is(err, ErrConsumedBeyondSent) {
		t.Fatalf("one past sent: err = %v", err)
	}
	if ok, err := w.Apply(WindowUpdate{StreamID: 7, Consumed: 500, Window: 1000}); err != nil || !ok {
		t.Fatalf("exactly sent: %v %v", ok, err)
	}
}

func TestStreamWindowIgnoresStaleUpdates(t *testing.T) {
	w := NewStreamWindow(1, 100)
	_ = w.Reserve(100)
	_, _ = w.Apply(WindowUpdate{StreamID: 1, Consumed: 80, Window: 100})
	ok, err := w.Apply(WindowUpdate{StreamID: 1, Consumed: 40, Window: 5})
	if err != nil || ok {
		t.Fatalf("stale update: ok=%v err=%v, want ignored", ok, err)
	}
	if w.Consumed() != 80 || w.Available() != 80 {
		t.Fatalf("stale update moved the window back: consumed %d available %d", w.Consumed(), w.Available())
	}
	if _, err := w.Apply(WindowUpdate{StreamID: 2, Consumed: 90}); !errors.Is(err, ErrWrongStream) {
		t.Fatalf("other stream: err = %v", err)
	}
	// A shrunken window leaves nothing available rather than underflowing.
	_, _ = w.Apply(WindowUpdate{StreamID: 1, Consumed: 80, Window: 10})
	if w.Available() != 0 {
		t.Fatalf("available = %d, want 0 when in-flight exceeds the window", w.Available())
	}
}
