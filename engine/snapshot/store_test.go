package snapshot

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"sync"
	"testing"
)

func TestPutKeepsNewestSnapshotPerEntity(t *testing.T) {
	st := NewStore()
	for _, s := range []Snapshot{{"a", 1, []byte("a1")}, {"b", 7, []byte("b7")}, {"a", 5, []byte("a5")}} {
		if err := st.Put(s); err != nil {
			t.Fatalf("Put(%v): %v", s, err)
		}
	}
	if s, ok := st.Get("a"); !ok || s.Through != 5 || string(s.State) != "a5" {
		t.Fatalf("Get(a) = %+v, %v; want through 5", s, ok)
	}
	if s, ok := st.Get("b"); !ok || s.Through != 7 {
		t.Fatalf("Get(b) = %+v, %v", s, ok)
	}
	if st.Len() != 2 {
		t.Fatalf("Len = %d, want 2", st.Len())
	}
}

func TestPutRejectsSnapshotNotAboveHighWater(t *testing.T) {
	st := NewStore()
	if err := st.Put(Snapshot{Entity: "d", Through: 0}); err != nil {
		t.Fatalf("first snapshot at seq 0 must be accepted: %v", err)
	}
	if err := st.Put(Snapshot{Entity: "d", Through: 10}); err != nil {
		t.Fatal(err)
	}
	for _, through := range []uint64{10, 9, 0} {
		err := st.Put(Snapshot{Entity: "d", Through: through, State: []byte("old")})
		var se *StaleError
		if !errors.As(err, &se) || !errors.Is(err, ErrStale) || se.HighWater != 10 {
			t.Fatalf("Put(through %d) = %v; want *StaleError with high-water 10", through, err)
		}
	}
	if s, _ := st.Get("d"); s.Through != 10 {
		t.Fatalf("stale put replaced the snapshot: %+v", s)
	}
}

// Release note: "Snapshot-store retention drops high-water mark on remove".
func TestSnapshotStoreHighWaterSurvivesRemove(t *testing.T) {
	st := NewStore()
	if err := st.Put(Snapshot{Entity: "d", Through: 42, State: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	st.Remove("d")
	if _, ok := st.Get("d"); ok {
		t.Fatal("Remove left the snapshot in place")
	}
	if hw, ok := st.HighWater("d"); !ok || hw != 42 {
		t.Fatalf("HighWater after Remove = %d, %v; want 42, true", hw, ok)
	}
	// A stale producer re-staging older state after the remove is refused.
	if err := st.Put(Snapshot{Entity: "d", Through: 41, State: []byte("stale")}); !errors.Is(err, ErrStale) {
		t.Fatalf("stale re-stage after Remove: err = %v, want ErrStale", err)
	}
	if err := st.Put(Snapshot{Entity: "d", Through: 43}); err != nil {
		t.Fatalf("newer snapshot after Remove: %v", err)
	}
}

// Release note: "forget() is now pub(crate)". The operation that drops a
// high-water mark must not be part of the exported API.
func TestSnapshotStoreForgetIsUnexported(t *testing.T) {
	fset := token.NewFileSet()
	names, err := filepath.Glob("*.go")
	if err != nil || len(names) == 0 {
		t.Fatalf("listing package files: %v (%d files)", err, len(names))
	}
	for _, name := range names {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Recv == nil || !fd.Name.IsExported() {
				continue
			}
			// Exported methods must not delete from the high map.
			found := false
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				if call, ok := n.(*ast.CallExpr); ok {
					if id, ok := call.Fun.(*ast.Ident); ok && id.Name == "delete" && len(call.Args) > 0 {
						if sel, ok := call.Args[0].(*ast.SelectorExpr); ok && sel.Sel.Name == "high" {
							found = true
						}
					}
					if sel, ok := call.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "forget" {
						found = true
					}
				}
				return true
			})
			if found {
				t.Errorf("%s: exported method %s can drop a high-water mark", name, fd.Name.Name)
			}
		}
	}
	// forget itself works, for this package's tests.
	st := NewStore()
	_ = st.Put(Snapshot{Entity: "d", Through: 5})
	st.forget("d")
	if _, ok := st.HighWater("d"); ok {
		t.Fatal("forget kept the high-water mark")
	}
	if err := st.Put(Snapshot{Entity: "d", Through: 1}); err != nil {
		t.Fatalf("after forget an older snapshot is accepted again: %v", err)
	}
}

func TestConcurrentEqualSeqPutsExactlyOneWins(t *testing.T) {
	st := NewStore()
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- st.Put(Snapshot{Entity: "d", Through: 9})
		}()
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		if err == nil {
			ok++
		} else if !errors.Is(err, ErrStale) {
			t.Fatal(err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d equal-seq puts succeeded, want exactly 1", ok)
	}
}
