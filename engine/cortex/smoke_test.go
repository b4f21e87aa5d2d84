package cortex

import (
	"context"
	"testing"

	"github.com/purplerain/mesh-operator/engine/redex"
)

func TestSmokeFold(t *testing.T) {
	l, _ := redex.Open(redex.Options{})
	defer l.Close()
	d, err := Start(l, 0, func(s *int, e redex.Entry) error { *s += len(e.Payload); return nil }, Options[int]{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ch := d.Changes()
	for i := 0; i < 10; i++ {
		l.Append([]byte("ab"))
	}
	if err := d.WaitForSeq(context.Background(), 9); err != nil {
		t.Fatal(err)
	}
	ev, err := ch.Next(context.Background())
	if err != nil || ev.Seq != 0 {
		t.Fatal(ev, err)
	}
	d.View(func(s *int) {
		if *s != 20 {
			t.Fatal(*s)
		}
	})
}
