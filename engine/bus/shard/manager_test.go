package shard

import (
	"errors"
	"math"
	"math/bits"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/purplerain/mesh-operator/engine/adapter"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func mustAdd(t *testing.T, m *Manager, id uint16) *Shard {
	t.Helper()
	s, err := m.Add(id)
	if err != nil {
		t.Fatalf("Add(%d): %v", id, err)
	}
	return s
}

func TestLifecycleProvisioningActiveDrainingStopped(t *testing.T) {
	m := NewManager(16, 0)
	s := mustAdd(t, m, 1)
	if s.State() != Provisioning {
		t.Fatalf("new shard in %s", s.State())
	}
	if m.Select(0) != nil {
		t.Fatal("Provisioning shard is routable")
	}
	if _, err := m.Activate(1); err != nil {
		t.Fatal(err)
	}
	if m.Select(0) != s {
		t.Fatal("Active shard not routable")
	}
	if err := m.Drain(1); err != nil {
		t.Fatal(err)
	}
	if m.Select(0) != nil || m.ActiveCount() != 0 {
		t.Fatal("Draining shard still routable or counted")
	}
	if _, err := m.Activate(1); !errors.Is(err, ErrState) {
		t.Fatalf("Activate on Draining = %v, want ErrState", err)
	}
	if _, err := m.Remove(1); !errors.Is(err, ErrState) {
		t.Fatalf("Remove on Draining = %v, want ErrState", err)
	}
	if err := m.Stop(1); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Remove(1); err != nil {
		t.Fatal(err)
	}
	if m.Get(1) != nil {
		t.Fatal("removed shard still present")
	}
	if _, err := m.Remove(1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Remove = %v, want ErrNotFound", err)
	}
}

// Release note: "ShardManager::activate_shard double-counts on idempotent calls".
func TestActivateShardIdempotentNoDoubleCount(t *testing.T) {
	m := NewManager(16, 0)
	mustAdd(t, m, 3)
	first, err := m.Activate(3)
	if err != nil || !first {
		t.Fatalf("first Activate = %v,%v; want true,nil", first, err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			again, err := m.Activate(3)
			if err != nil || again {
				t.Errorf("repeat Activate = %v,%v; want false,nil", again, err)
			}
		}()
	}
	wg.Wait()
	if got := m.ActiveCount(); got != 1 {
		t.Fatalf("ActiveCount after repeated Activate = %d, want 1", got)
	}
}

// Release note: "num_shards decremented on rollback that never incremented it".
func TestRollbackNeverOverDecrements(t *testing.T) {
	m := NewManager(16, 0)
	mustAdd(t, m, 0)
	m.Activate(0)
	mustAdd(t, m, 1) // provisioned, activation "failed" before transition
	if _, err := m.Rollback(1); err != nil {
		t.Fatal(err)
	}
	if got := m.ActiveCount(); got != 1 {
		t.Fatalf("ActiveCount after rolling back a never-activated shard = %d, want 1", got)
	}
	mustAdd(t, m, 2)
	m.Activate(2) // transitioned, then a later step failed
	if _, err := m.Rollback(2); err != nil {
		t.Fatal(err)
	}
	if got := m.ActiveCount(); got != 1 {
		t.Fatalf("ActiveCount after rolling back an activated shard = %d, want 1", got)
	}
	if m.Get(1) != nil || m.Get(2) != nil {
		t.Fatal("rolled-back shards still present")
	}
}

func TestRollbackReturnsStrandedEvents(t *testing.T) {
	m := NewManager(16, 0)
	s := mustAdd(t, m, 0)
	m.Activate(0)
	s.Ring.TryPush(adapter.Event{Payload: []byte("a")})
	ev, err := m.Rollback(0)
	if err != nil || len(ev) != 1 || string(ev[0].Payload) != "a" {
		t.Fatalf("Rollback = %v,%v; want the one stranded event", ev, err)
	}
}

// Release note: "A targeted remove_specific_stopped_shard replaces the bulk
// remove_stopped_shards() so sequential manual_scale_down doesn't prune
// sibling state under itself".
func TestRemoveSpecificStoppedShardKeepsSiblings(t *testing.T) {
	m := NewManager(16, 0)
	for id := uint16(0); id < 3; id++ {
		mustAdd(t, m, id)
		m.Activate(id)
	}
	for _, id := range []uint16{1, 2} {
		m.Drain(id)
		m.Stop(id)
	}
	sib := m.Get(2)
	sib.Ring.TryPush(adapter.Event{Payload: []byte("late")})
	if _, err := m.Remove(1); err != nil {
		t.Fatal(err)
	}
	if m.Get(2) != sib {
		t.Fatal("removing shard 1 pruned its stopped sibling 2")
	}
	if sib.Ring.Len() != 1 {
		t.Fatal("removing shard 1 touched shard 2's ring")
	}
	ev, err := m.Remove(2)
	if err != nil || len(ev) != 1 || string(ev[0].Payload) != "late" {
		t.Fatalf("Remove(2) = %v,%v; want its stranded event", ev, err)
	}
	if ids := m.IDs(); len(ids) != 1 || ids[0] != 0 {
		t.Fatalf("IDs = %v, want [0]", ids)
	}
}

func TestAddBudgetGateUnderConcurrency(t *testing.T) {
	m := NewManager(4, 5)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, budget := 0, 0
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func(id uint16) {
			defer wg.Done()
			_, err := m.Add(id)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrBudget):
				budget++
			default:
				t.Errorf("Add(%d): %v", id, err)
			}
		}(uint16(i))
	}
	wg.Wait()
	if ok != 5 || budget != 27 {
		t.Fatalf("%d adds succeeded, %d hit the budget; want 5 and 27", ok, budget)
	}
	if _, err := m.Add(0); !errors.Is(err, ErrExists) && !errors.Is(err, ErrBudget) {
		t.Fatalf("duplicate Add = %v", err)
	}
}

// Release note: "Modulo bias in equal-weight candidate selection".
func TestPickUnbiasedMultiplyShift(t *testing.T) {
	cases := []struct {
		h    uint64
		n    int
		want int
	}{
		{0, 3, 0},
		{math.MaxUint64, 3, 2},
		{math.MaxUint64 / 3, 3, 0},
		{math.MaxUint64/3 + 1, 3, 1},
		{1 << 63, 2, 1},
		{1<<63 - 1, 2, 0},
		{12345, 1, 0},
	}
	for _, c := range cases {
		if got := Pick(c.h, c.n); got != c.want {
			t.Errorf("Pick(%#x, %d) = %d, want %d", c.h, c.n, got, c.want)
		}
	}
	// Over an evenly spaced sweep of the whole hash space, every index of a
	// non-power-of-two n gets the same share. h%n on the low bits of the
	// same sweep would not (the sweep step is a multiple of n).
	const n, steps = 3, 3 * 1000
	counts := make([]int, n)
	for i := 0; i < steps; i++ {
		h, _ := bits.Div64(uint64(2*i+1), 0, 2*steps) // midpoint of the i-th slice
		counts[Pick(h, n)]++
	}
	for i, c := range counts {
		if c != steps/n {
			t.Errorf("index %d picked %d times, want %d", i, c, steps/n)
		}
	}
}

func TestLeastLoadedSelection(t *testing.T) {
	cases := []struct {
		name  string
		loads []int
		h     uint64
		want  int
	}{
		{"single", []int{7}, 99, 0},
		{"unique min", []int{5, 1, 9}, math.MaxUint64, 1},
		{"tie low hash", []int{2, 0, 0, 4}, 0, 1},
		{"tie high hash", []int{2, 0, 0, 4}, math.MaxUint64, 2},
		{"all equal mid", []int{3, 3, 3, 3}, 1 << 63, 2},
	}
	for _, c := range cases {
		if got := LeastLoaded(c.loads, c.h); got != c.want {
			t.Errorf("%s: LeastLoaded(%v, %#x) = %d, want %d", c.name, c.loads, c.h, got, c.want)
		}
	}
}

func TestSelectFollowsRefreshedLoads(t *testing.T) {
	m := NewManager(16, 0)
	a, b := mustAdd(t, m, 0), mustAdd(t, m, 1)
	m.Activate(0)
	m.Activate(1)
	for i := 0; i < 4; i++ {
		a.Ring.TryPush(adapter.Event{})
	}
	m.Refresh()
	for _, h := range []uint64{0, 1 << 63, math.MaxUint64} {
		if got := m.Select(h); got != b {
			t.Fatalf("Select(%#x) = shard %d, want least-loaded shard 1", h, got.ID)
		}
	}
	for i := 0; i < 8; i++ {
		b.Ring.TryPush(adapter.Event{})
	}
	if got := m.SelectNow(0); got != a {
		t.Fatalf("SelectNow = shard %d, want 0", got.ID)
	}
}

func TestSelectKeyedOnlyBaseShards(t *testing.T) {
	m := NewManager(16, 0)
	for id := uint16(0); id < 4; id++ {
		mustAdd(t, m, id)
		m.Activate(id)
	}
	if s := m.SelectKeyed(math.MaxUint64, 2); s == nil || s.ID != 1 {
		t.Fatalf("SelectKeyed(max, base 2) = %v, want shard 1", s)
	}
	m.Drain(1)
	if s := m.SelectKeyed(math.MaxUint64, 2); s != nil {
		t.Fatalf("SelectKeyed to a draining base shard = %d, want nil (unrouted)", s.ID)
	}
}
