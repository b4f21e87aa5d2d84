package wire

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// DefaultReplayWindow is how many sequence numbers behind the highest seen
// a ReplayWindow still tracks.
const DefaultReplayWindow = 1024

// Anti-replay errors.
var (
	ErrReplayDuplicate = errors.New("wire: sequence number already seen")
	ErrReplayTooOld    = errors.New("wire: sequence number older than the replay window")
)

// ReplayWindow remembers which of the last Size sequence numbers of one
// peer were accepted: a bitmap indexed by sequence modulo Size, anchored at
// the highest number accepted.
//
// Use Check before the expensive work (it changes nothing) and Commit after
// the packet authenticated, so forged packets cannot move the window.
type ReplayWindow struct {
	bits    []uint64
	size    uint64
	highest uint64
	started bool
}

// NewReplayWindow returns a window of size sequence numbers (rounded up to
// a multiple of 64; DefaultReplayWindow when size <= 0).
func NewReplayWindow(size int) *ReplayWindow {
	if size <= 0 {
		size = DefaultReplayWindow
	}
	words := (size + 63) / 64
	return &ReplayWindow{bits: make([]uint64, words), size: uint64(words) * 64}
}

// Size is the number of sequence numbers tracked.
func (w *ReplayWindow) Size() int { return int(w.size) }

// Highest is the highest sequence accepted, and whether any was.
func (w *ReplayWindow) Highest() (uint64, bool) { return w.highest, w.started }

func (w *ReplayWindow) bit(seq uint64) (word int, mask uint64) {
	i := seq % w.size
	return int(i / 64), 1 << (i % 64)
}

// Check reports whether seq would be accepted, without recording it.
func (w *ReplayWindow) Check(seq uint64) error {
	if !w.started || seq > w.highest {
		return nil
	}
	if w.highest-seq >= w.size {
		return fmt.Errorf("%w: %d, highest %d, window %d", ErrReplayTooOld, seq, w.highest, w.size)
	}
	if word, mask := w.bit(seq); w.bits[word]&mask != 0 {
		return fmt.Errorf("%w: %d", ErrReplayDuplicate, seq)
	}
	return nil
}

// jump describes a forward move that cleared the whole window.
type jump struct {
	from, to uint64
}

// commit records seq. cleared is non-nil when seq was so far ahead that the
// whole bitmap was zeroed.
func (w *ReplayWindow) commit(seq uint64) (cleared *jump, err error) {
	if err := w.Check(seq); err != nil {
		return nil, err
	}
	switch {
	case !w.started:
		w.started = true
		w.highest = seq
	case seq > w.highest:
		if seq-w.highest >= w.size {
			clear(w.bits)
			cleared = &jump{from: w.highest, to: seq}
		} else {
			w.clearRange(w.highest+1, seq)
		}
		w.highest = seq
	}
	word, mask := w.bit(seq)
	w.bits[word] |= mask
	return cleared, nil
}

// clearRange forgets the slots of sequences [from, to), which the window
// slides past; to-from is below the window size. Whole words are cleared at
// once so a jump costs O(words), not O(sequences).
func (w *ReplayWindow) clearRange(from, to uint64) {
	for from < to {
		i := from % w.size
		word, bit := i/64, i%64
		n := min(64-bit, to-from) // bits to clear in this word
		var mask uint64 = ^uint64(0)
		if n < 64 {
			mask = (uint64(1)<<n - 1) << bit
		}
		w.bits[word] &^= mask
		from += n
	}
}

// ReplayGuard keeps one ReplayWindow per peer. It is safe for concurrent
// use.
type ReplayGuard struct {
	mu     sync.Mutex
	size   int
	logger *slog.Logger
	peers  map[uint64]*ReplayWindow
}

// NewReplayGuard returns a guard whose per-peer windows track size sequence
// numbers and which logs window clears to logger (slog.Default when nil).
func NewReplayGuard(size int, logger *slog.Logger) *ReplayGuard {
	if logger == nil {
		logger = slog.Default()
	}
	return &ReplayGuard{size: size, logger: logger, peers: make(map[uint64]*ReplayWindow)}
}

// Check reports whether peer's seq would be accepted, without recording it.
func (g *ReplayGuard) Check(peer, seq uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	w, ok := g.peers[peer]
	if !ok {
		return nil
	}
	return w.Check(seq)
}

// Commit records peer's seq, or refuses it with ErrReplayDuplicate or
// ErrReplayTooOld. Call it only for authenticated packets. A legitimate
// jump of a whole window or more zeroes the peer's bitmap (everything it
// held is now too old anyway); that is logged at warn level with the peer,
// the previous highest, the new sequence and the gap, because a burst of
// them usually means a peer restarted its sequence space or packets are
// being held back.
func (g *ReplayGuard) Commit(peer, seq uint64) error {
	g.mu.Lock()
	w, ok := g.peers[peer]
	if !ok {
		w = NewReplayWindow(g.size)
		g.peers[peer] = w
	}
	cleared, err := w.commit(seq)
	size := w.size
	g.mu.Unlock()
	if err != nil {
		return err
	}
	if cleared != nil {
		g.logger.LogAttrs(context.Background(), slog.LevelWarn, "wire: anti-replay window cleared by a large sequence jump",
			slog.Uint64("peer", peer),
			slog.Uint64("previous_highest", cleared.from),
			slog.Uint64("sequence", cleared.to),
			slog.Uint64("gap", cleared.to-cleared.from),
			slog.Uint64("window", size),
		)
	}
	return nil
}

// Forget drops a peer's window (when its session ends).
func (g *ReplayGuard) Forget(peer uint64) {
	g.mu.Lock()
	delete(g.peers, peer)
	g.mu.Unlock()
}
