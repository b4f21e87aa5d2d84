package cortex

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/redex"
)

// BenchmarkFoldRoundTrip measures append → folded → WaitForSeq returns.
func BenchmarkFoldRoundTrip(b *testing.B) {
	l, err := redex.Open(redex.Options{Retention: redex.Retention{MaxEvents: 1 << 16}})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	d, err := Start(l, 0, func(s *int, e redex.Entry) error { *s += len(e.Payload); return nil },
		Options[int]{Start: LiveOnly(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
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
		if err := d.WaitForSeq(ctx, seq); err != nil {
			b.Fatal(err)
		}
		if i++; i%(1<<14) == 0 {
			l.Sweep(time.Now())
		}
	}
	done()
}
