package redex

import (
	"context"
	"testing"
)

func TestSmokeAppendReadTail(t *testing.T) {
	l, err := Open(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := l.Append([]byte("a"))
	if err != nil || s != 0 {
		t.Fatalf("seq %d err %v", s, err)
	}
	first, ok, err := l.AppendBatch([][]byte{[]byte("b"), []byte("c")})
	if err != nil || !ok || first != 1 {
		t.Fatalf("batch %d %v %v", first, ok, err)
	}
	tl, _ := l.Tail(0)
	l.AppendInline([8]byte{1, 2, 3, 4, 5, 6, 7, 8})
	for i := 0; i < 4; i++ {
		e, err := tl.Next(context.Background())
		if err != nil || e.Seq != uint64(i) {
			t.Fatalf("%d: %+v %v", i, e, err)
		}
	}
	es, _ := l.Read(0, 10)
	if len(es) != 4 || string(es[2].Payload) != "c" || es[3].Payload[7] != 8 {
		t.Fatalf("%+v", es)
	}
}

func BenchmarkSmokeAppend32(b *testing.B) {
	l, _ := Open(Options{})
	p := make([]byte, 32)
	b.ReportAllocs()
	for b.Loop() {
		l.Append(p)
	}
}

func TestSmokeDisk(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(Options{Dir: dir, SegmentBytes: 200})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if _, err := l.Append([]byte("hello world")); err != nil {
			t.Fatal(err)
		}
	}
	l.AppendBatch([][]byte{[]byte("x"), []byte("y")})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = Open(Options{Dir: dir, SegmentBytes: 200})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.NextSeq() != 22 {
		t.Fatal(l.NextSeq())
	}
	e, _ := l.Get(21)
	if string(e.Payload) != "y" {
		t.Fatal(e)
	}
	t.Log(l)
}
