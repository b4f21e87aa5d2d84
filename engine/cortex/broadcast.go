package cortex

import (
	"context"
	"sync"
)

// ChangeEvent is one item of ChangesWithLag: either a folded seq, or (when
// Lagged > 0) notice that the subscriber missed that many notifications.
type ChangeEvent struct {
	Seq    uint64
	Lagged uint64
}

// ChangeStream is a subscription to successfully folded seqs.
type ChangeStream struct {
	b       *broadcast
	withLag bool
	mu      sync.Mutex
	buf     []uint64 // ring of pending seqs
	head, n int
	lagged  uint64
	err     error         // terminal error once set
	wake    chan struct{} // capacity 1: "something changed"
}

type broadcast struct {
	mu   sync.Mutex
	subs map[*ChangeStream]struct{}
	err  error
	cap  int
}

func newBroadcast(capacity int) *broadcast {
	return &broadcast{subs: make(map[*ChangeStream]struct{}), cap: capacity}
}

func (b *broadcast) subscribe(withLag bool) *ChangeStream {
	s := &ChangeStream{b: b, withLag: withLag, buf: make([]uint64, b.cap), wake: make(chan struct{}, 1)}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		s.err = b.err
		return s
	}
	b.subs[s] = struct{}{}
	return s
}

// publish hands seq to every subscriber without blocking. A full
// subscriber drops its oldest pending seq and counts it as lagged.
func (b *broadcast) publish(seq uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		s.mu.Lock()
		if s.n == len(s.buf) {
			s.head = (s.head + 1) % len(s.buf)
			s.n--
			s.lagged++
		}
		s.buf[(s.head+s.n)%len(s.buf)] = seq
		s.n++
		s.mu.Unlock()
		s.signal()
	}
}

// end terminates every subscriber with err after its pending items.
func (b *broadcast) end(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return
	}
	b.err = err
	for s := range b.subs {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		s.signal()
		delete(b.subs, s)
	}
}

func (s *ChangeStream) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Next returns the next event. A stream from Changes never returns a lag
// notice. After the driver halts or closes, pending events are drained and
// then the terminal error is returned.
func (s *ChangeStream) Next(ctx context.Context) (ChangeEvent, error) {
	for {
		s.mu.Lock()
		if s.lagged > 0 && s.withLag {
			ev := ChangeEvent{Lagged: s.lagged}
			s.lagged = 0
			s.mu.Unlock()
			return ev, nil
		}
		s.lagged = 0
		if s.n > 0 {
			seq := s.buf[s.head]
			s.head = (s.head + 1) % len(s.buf)
			s.n--
			s.mu.Unlock()
			return ChangeEvent{Seq: seq}, nil
		}
		err := s.err
		s.mu.Unlock()
		if err != nil {
			return ChangeEvent{}, err
		}
		select {
		case <-s.wake:
		case <-ctx.Done():
			return ChangeEvent{}, ctx.Err()
		}
	}
}

// Close unsubscribes. Next still returns the notifications already pending,
// then ErrClosed (or the halt reason if the driver had already halted).
func (s *ChangeStream) Close() {
	s.b.mu.Lock()
	delete(s.b.subs, s)
	s.b.mu.Unlock()
	s.mu.Lock()
	if s.err == nil {
		s.err = ErrClosed
	}
	s.mu.Unlock()
	s.signal()
}
