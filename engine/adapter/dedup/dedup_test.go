package dedup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Release note: "RedisStreamDedup is FIFO eviction, not LRU as documented".
func TestEvictionIsFIFONotLRU(t *testing.T) {
	s := New(3)
	for _, id := range []string{"a", "b", "c"} {
		if s.Seen(id) {
			t.Fatalf("%s reported seen on first insert", id)
		}
	}
	if !s.Seen("a") { // touching a would save it under LRU
		t.Fatal("a not seen")
	}
	s.Seen("d") // evicts the oldest inserted: a
	if s.Contains("a") {
		t.Fatal("a survived eviction: that is LRU, not FIFO")
	}
	for _, id := range []string{"b", "c", "d"} {
		if !s.Contains(id) {
			t.Fatalf("%s evicted", id)
		}
	}
	if s.Len() != 3 {
		t.Fatalf("Len = %d", s.Len())
	}
}

// Release note: "RedisStreamDedup::new accepts unbounded capacity".
func TestCapacityClampedToMax(t *testing.T) {
	for _, c := range []struct{ in, want int }{{1 << 30, MaxCapacity}, {MaxCapacity + 1, MaxCapacity}, {0, 1}, {-5, 1}, {100, 100}} {
		if got := New(c.in).Cap(); got != c.want {
			t.Errorf("New(%d).Cap() = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestSaveLoadRoundTripKeepsFIFOOrder(t *testing.T) {
	s := New(4)
	for i := 0; i < 6; i++ {
		s.Seen(fmt.Sprint(i))
	}
	path := filepath.Join(t.TempDir(), "dedup.state")
	if err := s.Save(path); err != nil {
		t.Fatal(err)
	}
	l, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if l.Cap() != 4 || l.Len() != 4 || l.Contains("1") || !l.Contains("2") {
		t.Fatalf("loaded cap %d len %d", l.Cap(), l.Len())
	}
	l.Seen("new") // must evict "2", the oldest
	if l.Contains("2") || !l.Contains("3") {
		t.Fatal("FIFO order lost across save/load")
	}
}

// Release note: "dedup_state silently swallows fsync failures".
func TestSaveFsyncErrorPropagated(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dedup.state")
	old := New(2)
	old.Seen("kept")
	if err := old.Save(path); err != nil {
		t.Fatal(err)
	}
	diskFull := errors.New("no space left on device")
	orig := syncFile
	syncFile = func(*os.File) error { return diskFull }
	defer func() { syncFile = orig }()
	s := New(2)
	s.Seen("lost")
	if err := s.Save(path); !errors.Is(err, diskFull) {
		t.Fatalf("Save with failing fsync = %v, want the fsync error", err)
	}
	syncFile = orig
	l, err := Load(path)
	if err != nil || !l.Contains("kept") || l.Contains("lost") {
		t.Fatalf("failed save clobbered the previous state: %v", err)
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("failed save left its temp file: %v", err)
	}
}

// Release note: "dedup_state::create_new(true) poison after crash".
func TestStaleTempFileRemovedBeforeSave(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dedup.state")
	if err := os.WriteFile(path+".tmp", []byte("half-written by a crashed run"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := New(2)
	s.Seen("x")
	if err := s.Save(path); err != nil {
		t.Fatalf("Save after a crash left a temp file: %v", err)
	}
	if l, err := Load(path); err != nil || !l.Contains("x") {
		t.Fatalf("Load = %v", err)
	}
}

func TestDecodeRejectsCorruption(t *testing.T) {
	s := New(8)
	s.Seen("abc")
	good := s.Encode()
	cases := map[string][]byte{
		"empty":     nil,
		"truncated": good[:len(good)-1],
		"flipped":   append(append([]byte(nil), good[:6]...), append([]byte{good[6] ^ 1}, good[7:]...)...),
	}
	for name, b := range cases {
		if _, err := Decode(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}

func FuzzDecodeState(f *testing.F) {
	s := New(4)
	s.Seen("a")
	s.Seen("bb")
	f.Add(s.Encode())
	f.Add(New(1).Encode())
	f.Add([]byte("MDDP"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Decode(b)
		if err != nil {
			return
		}
		if d.Len() > d.Cap() || d.Cap() > MaxCapacity {
			t.Fatalf("decoded len %d cap %d", d.Len(), d.Cap())
		}
		again, err := Decode(d.Encode())
		if err != nil || again.Len() != d.Len() {
			t.Fatalf("re-encode round trip: %v", err)
		}
	})
}
