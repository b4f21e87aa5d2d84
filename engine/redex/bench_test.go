package redex

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// benchLog opens a memory log that a periodic Sweep keeps at a bounded
// size, so long runs measure steady state rather than heap growth.
func benchLog(b *testing.B, o Options) *Log {
	b.Helper()
	if o.Retention == (Retention{}) {
		o.Retention = Retention{MaxEvents: 1 << 16}
	}
	l, err := Open(o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	return l
}

const sweepEvery = 1 << 14

func BenchmarkAppendInline(b *testing.B) {
	l := benchLog(b, Options{})
	v := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	b.ReportAllocs()
	i := 0
	done := reportCPU(b)
	for b.Loop() {
		if _, err := l.AppendInline(v); err != nil {
			b.Fatal(err)
		}
		if i++; i%sweepEvery == 0 {
			l.Sweep(time.Now())
		}
	}
	done()
}

func benchAppend(b *testing.B, size int) {
	l := benchLog(b, Options{})
	p := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	i := 0
	done := reportCPU(b)
	for b.Loop() {
		if _, err := l.Append(p); err != nil {
			b.Fatal(err)
		}
		if i++; i%sweepEvery == 0 {
			l.Sweep(time.Now())
		}
	}
	done()
}

func BenchmarkAppend32B(b *testing.B)  { benchAppend(b, 32) }
func BenchmarkAppend1KiB(b *testing.B) { benchAppend(b, 1024) }

func BenchmarkAppendBatch64x64B(b *testing.B) {
	l := benchLog(b, Options{})
	batch := make([][]byte, 64)
	for i := range batch {
		batch[i] = make([]byte, 64)
	}
	b.ReportAllocs()
	i := 0
	done := reportCPU(b)
	for b.Loop() {
		if _, _, err := l.AppendBatch(batch); err != nil {
			b.Fatal(err)
		}
		if i++; i%(sweepEvery/64) == 0 {
			l.Sweep(time.Now())
		}
	}
	done()
	b.ReportMetric(float64(b.N)*64/b.Elapsed().Seconds()/1e6, "Melem/s")
}

func BenchmarkDiskAppend32B(b *testing.B) {
	policies := []struct {
		name string
		p    FsyncPolicy
	}{
		{"never", FsyncPolicy{Mode: FsyncNever}},
		{"every-1", EveryN(1)},
		{"every-64", EveryN(64)},
		{"interval-10ms", Interval(10 * time.Millisecond)},
		{"interval-10ms-or-64KiB", IntervalOrBytes(10*time.Millisecond, 64<<10)},
	}
	for _, pc := range policies {
		b.Run(pc.name, func(b *testing.B) {
			l, err := Open(Options{Dir: b.TempDir(), Fsync: pc.p, Retention: Retention{MaxEvents: 1 << 16}})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			p := make([]byte, 32)
			b.ReportAllocs()
			i := 0
			done := reportCPU(b)
			for b.Loop() {
				if _, err := l.Append(p); err != nil {
					b.Fatal(err)
				}
				if i++; i%sweepEvery == 0 {
					l.Sweep(time.Now())
				}
			}
			done()
		})
	}
}

// BenchmarkTailLatency measures append → delivery to a live subscriber
// (one append, then the subscriber receives it), per entry.
func BenchmarkTailLatency(b *testing.B) {
	l := benchLog(b, Options{})
	t, err := l.Tail(Live)
	if err != nil {
		b.Fatal(err)
	}
	defer t.Close()
	p := make([]byte, 32)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	done := reportCPU(b)
	for b.Loop() {
		seq, err := l.Append(p)
		if err != nil {
			b.Fatal(err)
		}
		e, err := t.Next(ctx)
		if err != nil || e.Seq != seq {
			b.Fatal(fmt.Sprint(e.Seq, err))
		}
		if i++; i%sweepEvery == 0 {
			l.Sweep(time.Now())
		}
	}
	done()
}

// BenchmarkTailPingPong measures append → wake-up of a subscriber on
// another goroutine, which acknowledges each entry before the next append:
// ns/op is the full hand-off latency.
func BenchmarkTailPingPong(b *testing.B) {
	l := benchLog(b, Options{})
	t, err := l.Tail(Live)
	if err != nil {
		b.Fatal(err)
	}
	ack := make(chan uint64)
	go func() {
		defer close(ack)
		for {
			e, err := t.Next(context.Background())
			if err != nil {
				return
			}
			ack <- e.Seq
		}
	}()
	p := make([]byte, 32)
	b.ReportAllocs()
	i := 0
	done := reportCPU(b)
	for b.Loop() {
		seq, err := l.Append(p)
		if err != nil {
			b.Fatal(err)
		}
		if got := <-ack; got != seq {
			b.Fatalf("got %d want %d", got, seq)
		}
		if i++; i%sweepEvery == 0 {
			l.Sweep(time.Now())
		}
	}
	done()
	t.Close()
	for range ack {
	}
}
