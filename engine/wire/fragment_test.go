package wire

import (
	"bytes"
	"errors"
	"testing"
)

// sendFragmented runs event through SplitEvent and a Reassembler as a
// transport would and returns what came out.
func sendFragmented(t *testing.T, r *Reassembler, stream uint64, id uint16, event []byte, chunk int) []byte {
	t.Helper()
	parts, err := SplitEvent(event, chunk, r.MaxEvent())
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for i, p := range parts {
		h := Header{StreamID: stream}
		FragmentHeader(&h, id, i, len(parts))
		// Round-trip the header so the flags survive encoding.
		var b [HeaderSize]byte
		h.Put(&b)
		h2, err := DecodeHeader(b[:])
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.Add(&h2, p)
		if err != nil {
			t.Fatalf("fragment %d/%d: %v", i, len(parts), err)
		}
		if (got != nil) != (i == len(parts)-1) {
			t.Fatalf("fragment %d/%d: event returned early or not at the end", i, len(parts))
		}
		out = got
	}
	return out
}

func TestFragmentSizesRoundTrip(t *testing.T) {
	const chunk = 1000
	for _, size := range []int{0, 1, chunk - 1, chunk, chunk + 1, 7*chunk + 13, 100 * chunk} {
		r := NewReassembler(1<<20, 1<<20)
		ev := bytes.Repeat([]byte{byte(size)}, size)
		for i := range ev {
			ev[i] = byte(i * 7)
		}
		got := sendFragmented(t, r, 1, 9, ev, chunk)
		if !bytes.Equal(got, ev) {
			t.Fatalf("size %d: reassembled %d bytes, not the event", size, len(got))
		}
		if r.InFlight() != 0 || r.Pending() != 0 {
			t.Fatalf("size %d: %d bytes of %d partial events held after the last fragment", size, r.InFlight(), r.Pending())
		}
		parts, _ := SplitEvent(ev, chunk, 1<<20)
		if want := max(1, (size+chunk-1)/chunk); len(parts) != want {
			t.Fatalf("size %d: %d fragments, want %d", size, len(parts), want)
		}
	}
}

func TestFragmentBounds(t *testing.T) {
	t.Run("oversize is refused with its sizes before buffering past the bound", func(t *testing.T) {
		r := NewReassembler(2500, 1<<20)
		ev := make([]byte, 3000)
		if _, err := SplitEvent(ev, 1000, 2500); !errors.Is(err, ErrEventOversize) {
			t.Fatalf("sender side: %v", err)
		}
		parts, _ := SplitEvent(ev, 1000, 1<<20)
		var err error
		for i, p := range parts {
			h := Header{StreamID: 1}
			FragmentHeader(&h, 1, i, len(parts))
			if _, err = r.Add(&h, p); err != nil {
				break
			}
		}
		var oe *OversizeError
		if !errors.As(err, &oe) || oe.Max != 2500 || oe.Size != 3000 {
			t.Fatalf("receiver side: %v", err)
		}
		if r.InFlight() != 0 || r.Pending() != 0 {
			t.Fatalf("oversize event left %d bytes held", r.InFlight())
		}
	})
	t.Run("in-flight memory is bounded across events", func(t *testing.T) {
		r := NewReassembler(10_000, 3000)
		for id := uint16(0); id < 3; id++ {
			h := Header{StreamID: 1}
			FragmentHeader(&h, id, 0, 2)
			if _, err := r.Add(&h, make([]byte, 1000)); err != nil {
				t.Fatalf("event %d: %v", id, err)
			}
		}
		h := Header{StreamID: 2}
		FragmentHeader(&h, 0, 0, 2)
		if _, err := r.Add(&h, make([]byte, 1)); !errors.Is(err, ErrReassemblyMemory) {
			t.Fatalf("past the bound: %v", err)
		}
		r.Drop(1, 0)
		if r.InFlight() != 2000 {
			t.Fatalf("after Drop: %d bytes held", r.InFlight())
		}
	})
	t.Run("out of order and orphan fragments", func(t *testing.T) {
		r := NewReassembler(0, 0)
		h := Header{StreamID: 1}
		FragmentHeader(&h, 4, 1, 3)
		if _, err := r.Add(&h, []byte("x")); !errors.Is(err, ErrFragment) {
			t.Fatalf("orphan: %v", err)
		}
		FragmentHeader(&h, 4, 0, 3)
		if _, err := r.Add(&h, []byte("x")); err != nil {
			t.Fatal(err)
		}
		FragmentHeader(&h, 4, 2, 3)
		if _, err := r.Add(&h, []byte("x")); !errors.Is(err, ErrFragment) {
			t.Fatalf("gap: %v", err)
		}
		if r.Pending() != 0 {
			t.Fatal("a broken event stayed pending")
		}
		h.FragmentFlags = 0x80 | FragFlagFragment
		if _, err := r.Add(&h, nil); !errors.Is(err, ErrFragment) {
			t.Fatalf("unknown flags: %v", err)
		}
	})
}

// FuzzReassembler feeds arbitrary fragment sequences: the reassembler never
// panics, never holds more than its bounds, and returns only events within
// the per-event bound. Its seeds run as an ordinary test.
func FuzzReassembler(f *testing.F) {
	f.Add([]byte{0, 1, 0, 3, 'a', 'b', 'c'})
	f.Add([]byte{0, 1, 0, 1, 'a', 0, 3, 0, 1, 'b'})
	f.Add([]byte{0, 1, 1, 1, 'a'})
	f.Add([]byte{1, 3, 0, 200, 1, 1, 2, 9, 2, 3, 0, 1, 'z'})
	f.Add([]byte{0, 1, 0, 255, 0, 1, 0, 255, 0, 1, 0, 255})
	f.Add([]byte{0, 0x81, 0, 1, 'q'})
	f.Fuzz(func(t *testing.T, data []byte) {
		const maxEvent, maxInFlight = 600, 1000
		r := NewReassembler(maxEvent, maxInFlight)
		// Each record: id u8 | flags u8 | index u8 | n u8 | n bytes.
		for len(data) >= 4 {
			h := Header{StreamID: uint64(data[0] & 3), FragmentID: uint16(data[0]), FragmentFlags: data[1], FragmentOffset: uint16(data[2])}
			n := min(int(data[3]), len(data)-4)
			chunk := data[4 : 4+n]
			data = data[4+n:]
			ev, err := r.Add(&h, chunk)
			if err == nil && ev != nil && len(ev) > maxEvent {
				t.Fatalf("returned an event of %d bytes, bound %d", len(ev), maxEvent)
			}
			if r.InFlight() > maxInFlight || r.InFlight() < 0 {
				t.Fatalf("holds %d bytes, bound %d", r.InFlight(), maxInFlight)
			}
		}
	})
}
