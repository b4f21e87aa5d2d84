package wire

import (
	"errors"
	"fmt"
)

// Stream-window errors.
var (
	// ErrWindowExhausted: the receiver has not granted room for n more bytes.
	ErrWindowExhausted = errors.New("wire: stream window exhausted")
	// ErrConsumedBeyondSent: a WindowUpdate claims more bytes consumed than
	// were ever sent; the receiver is broken or hostile.
	ErrConsumedBeyondSent = errors.New("wire: window update consumed more than was sent")
	// ErrWrongStream: a WindowUpdate for another stream.
	ErrWrongStream = errors.New("wire: window update for another stream")
)

// StreamWindow is a sender's credit for one stream: it may have at most
// Window bytes in flight beyond what the receiver reported consumed. The
// consumed total is bounded by what was sent (a larger claim is refused,
// not clamped, because it can only come from a broken or hostile peer) and
// never moves backwards (a stale, reordered update is ignored).
//
// A StreamWindow is owned by the stream's sending goroutine.
type StreamWindow struct {
	streamID uint64
	sent     uint64
	consumed uint64
	window   uint32
}

// NewStreamWindow starts a stream with the receiver's initial window.
func NewStreamWindow(streamID uint64, initial uint32) *StreamWindow {
	return &StreamWindow{streamID: streamID, window: initial}
}

// Sent is the total bytes reserved so far.
func (w *StreamWindow) Sent() uint64 { return w.sent }

// Consumed is the receiver's consumed total as last applied.
func (w *StreamWindow) Consumed() uint64 { return w.consumed }

// Available is how many more bytes may be sent now.
func (w *StreamWindow) Available() uint64 {
	inFlight := w.sent - w.consumed
	if inFlight >= uint64(w.window) {
		return 0
	}
	return uint64(w.window) - inFlight
}

// Reserve accounts n bytes about to be sent, or refuses with
// ErrWindowExhausted leaving the window unchanged.
func (w *StreamWindow) Reserve(n int) error {
	if n < 0 || uint64(n) > w.Available() {
		return fmt.Errorf("%w: want %d, %d available", ErrWindowExhausted, n, w.Available())
	}
	w.sent += uint64(n)
	return nil
}

// Apply takes a receiver's update. It reports whether the update was newer
// than what the window already knew; an older one changes nothing.
func (w *StreamWindow) Apply(u WindowUpdate) (bool, error) {
	if u.StreamID != w.streamID {
		return false, fmt.Errorf("%w: %d, want %d", ErrWrongStream, u.StreamID, w.streamID)
	}
	if u.Consumed > w.sent {
		return false, fmt.Errorf("%w: %d consumed, %d sent", ErrConsumedBeyondSent, u.Consumed, w.sent)
	}
	if u.Consumed < w.consumed {
		return false, nil
	}
	w.consumed = u.Consumed
	w.window = u.Window
	return true, nil
}
